"""Per-generation mesh authority: one random P-384 key with two certificates, and leaf issuance.

Every manifest generation gets a fresh P-384 key. It is certified twice with the same subject
(``CN=system:coordinator:intermediate``) and the same SubjectKeyIdentifier:

- the **intermediate**, signed by the root CA, so a leaf chains leaf → intermediate → root; and
- the **mesh CA**, self-signed, the trust anchor that workloads of the current generation pin
  (``mesh-ca.pem``).

A leaf's issuer name and AuthorityKeyIdentifier therefore match both, and a verifier may use either anchor.
A manifest update replaces this key: leaves from before the update still chain to the root (through their
own generation's intermediate) but no longer to the new mesh CA.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from contrast.pki import der, oids
from contrast.pki.root import ROOT_COMMON_NAME, ca_extensions, name
from contrast.pki.san import parse_sans

MESH_COMMON_NAME: Final = "system:coordinator:intermediate"
MESH_CA_VALIDITY: Final = dt.timedelta(days=3650)
LEAF_VALIDITY: Final = dt.timedelta(days=365)
# Backdating tolerates clock skew between the Coordinator and its relying parties.
BACKDATE: Final = dt.timedelta(hours=1)

Tee = Literal["snp", "tdx"]


def random_serial() -> int:
    """A positive 127-bit random serial (RFC 5280: ≤ 20 octets; CA/B: ≥ 64 bits of entropy)."""
    return secrets.randbits(127) | 1


@dataclass(frozen=True, slots=True)
class MeshAuthority:
    """The signing half of one manifest generation. Holds a private key: never log or publish it."""

    key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    mesh_ca: x509.Certificate

    def __repr__(self) -> str:
        return f"MeshAuthority(mesh_ca_serial={self.mesh_ca.serial_number:x})"

    def key_der(self) -> bytes:
        """PKCS#8 DER of the mesh key, for sealing to a joining CA replica."""
        return self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def from_der(
        cls,
        key_der: bytes,
        intermediate_der: bytes,
        mesh_ca_der: bytes,
        *,
        root: x509.Certificate | None = None,
    ) -> MeshAuthority:
        """Rebuild from DER (as handed to a joined CA replica); checks that the parts belong together."""
        key = serialization.load_der_private_key(key_der, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
            raise ValueError("the mesh key is P-384")
        inter = x509.load_der_x509_certificate(intermediate_der)
        mesh = x509.load_der_x509_certificate(mesh_ca_der)
        pub = key.public_key()
        if inter.public_key() != pub or mesh.public_key() != pub:
            raise ValueError("the mesh certificates do not carry the mesh key")
        if inter.subject != mesh.subject or mesh.issuer != mesh.subject:
            raise ValueError("intermediate and mesh CA must share one subject; the mesh CA is self-signed")
        try:
            mesh.verify_directly_issued_by(mesh)
            if root is not None:
                inter.verify_directly_issued_by(root)  # the intermediate must chain to the root we trust
        except InvalidSignature as e:
            raise ValueError("a mesh certificate signature does not verify") from e
        return cls(key=key, intermediate=inter, mesh_ca=mesh)

    def issue_leaf(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        sans: list[str] | tuple[str, ...],
        policy_hash: bytes,
        tee: Tee,
        workload_secret_id: str = "",
        now: dt.datetime,
        validity: dt.timedelta = LEAF_VALIDITY,
    ) -> x509.Certificate:
        """A P-256 leaf for an attested workload: SANs from its manifest entry, claims from its evidence."""
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise ValueError("leaf keys are P-256")
        if len(policy_hash) != 32:
            raise ValueError("policy hash is 32 bytes")
        if tee not in ("snp", "tdx"):
            raise ValueError("tee must be 'snp' or 'tdx'")
        names = parse_sans(sans)
        if not names:
            raise ValueError("a leaf needs at least one SAN")
        not_before = now - BACKDATE
        # A leaf never outlives its issuer: a verifier would reject the chain at the CA's expiry anyway.
        not_after = min(
            now + validity, self.mesh_ca.not_valid_after_utc, self.intermediate.not_valid_after_utc
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(policy_hash.hex()))
            .issuer_name(self.mesh_ca.subject)
            .public_key(public_key)
            .serial_number(random_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .add_extension(x509.UnrecognizedExtension(oids.POLICY_HASH, der.octet_string(policy_hash)), False)
            .add_extension(x509.UnrecognizedExtension(oids.TEE, der.utf8_string(tee)), critical=False)
        )
        if workload_secret_id:
            ext = x509.UnrecognizedExtension(oids.WORKLOAD_SECRET_ID, der.utf8_string(workload_secret_id))
            builder = builder.add_extension(ext, critical=False)
        return builder.sign(self.key, hashes.SHA384())


def new_mesh_authority(
    root_key: ec.EllipticCurvePrivateKey,
    root_cert: x509.Certificate,
    *,
    now: dt.datetime,
    validity: dt.timedelta = MESH_CA_VALIDITY,
) -> MeshAuthority:
    """A fresh key, its root-signed intermediate and its self-signed mesh CA (one per manifest generation)."""
    if root_cert.public_key() != root_key.public_key():
        raise ValueError("root key and root certificate do not match")
    if root_cert.subject != name(ROOT_COMMON_NAME):
        raise ValueError("not a Contrast root certificate")
    key = ec.generate_private_key(ec.SECP384R1())
    pub = key.public_key()
    subject = name(MESH_COMMON_NAME)
    not_before, not_after = now - BACKDATE, min(now + validity, root_cert.not_valid_after_utc)

    def base(issuer: x509.Name) -> x509.CertificateBuilder:
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(pub)
            .serial_number(random_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        return ca_extensions(b, pub, path_length=0)

    aki_root = x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key())
    intermediate = (
        base(root_cert.subject).add_extension(aki_root, critical=False).sign(root_key, hashes.SHA384())
    )
    aki_self = x509.AuthorityKeyIdentifier.from_issuer_public_key(pub)
    mesh_ca = base(subject).add_extension(aki_self, critical=False).sign(key, hashes.SHA384())
    return MeshAuthority(key=key, intermediate=intermediate, mesh_ca=mesh_ca)


@dataclass(frozen=True, slots=True)
class LeafClaims:
    """What a mesh leaf says about its workload (read back from our private extensions)."""

    policy_hash: bytes
    tee: str
    workload_secret_id: str


def leaf_claims(cert: x509.Certificate) -> LeafClaims:
    """Read the claim extensions of a mesh leaf; ``ValueError`` if one is missing or malformed."""

    def raw(oid: x509.ObjectIdentifier) -> bytes | None:
        try:
            ext = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            return None
        if not isinstance(ext, x509.UnrecognizedExtension):
            raise ValueError(f"extension {oid.dotted_string} has an unexpected type")
        return ext.value

    ph, tee, wsid = raw(oids.POLICY_HASH), raw(oids.TEE), raw(oids.WORKLOAD_SECRET_ID)
    if ph is None or tee is None:
        raise ValueError("not a Contrast mesh leaf: claim extensions missing")
    policy_hash = der.decode_octet_string(ph)
    if len(policy_hash) != 32:
        raise ValueError("policy hash claim is not 32 bytes")
    return LeafClaims(
        policy_hash=policy_hash,
        tee=der.decode_utf8_string(tee),
        workload_secret_id=der.decode_utf8_string(wsid) if wsid is not None else "",
    )
