"""Per-generation mesh authority: one random P-384 key with two certificates, and leaf issuance.

Every manifest generation gets a fresh P-384 key. It is certified twice with the same subject
(``CN=system:coordinator:intermediate``) and the same SubjectKeyIdentifier:

- the **intermediate**, signed by the root CA, so a leaf chains leaf → intermediate → root; and
- the **mesh CA**, self-signed, the trust anchor that workloads of the current generation pin
  (``mesh-ca.pem``).

A leaf's issuer name and AuthorityKeyIdentifier therefore match both, and a verifier may use either anchor.
A manifest update replaces this key: leaves from before the update still chain to the root (through their
own generation's intermediate) but no longer to the new mesh CA.

Leaves are assembled from a per-authority DER template (:mod:`contrast.pki.leaf`) whose output is proven
byte-identical to ``x509.CertificateBuilder``'s by the tests; each authority's first leaf is also read back
and checked at run time before it is handed out.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.errors import InternalError
from contrast.pki import der, oids
from contrast.pki.leaf import LeafTemplate
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
    # Derived once per generation (the hot path issues many leaves from one authority): see contrast.pki.leaf.
    _leaves: LeafTemplate = field(init=False, repr=False, compare=False)
    _issuer_not_after: dt.datetime = field(init=False, repr=False, compare=False)
    intermediate_der: bytes = field(init=False, repr=False, compare=False)
    mesh_ca_der: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The leaf's issuer name is the mesh CA's subject, which is also the intermediate's (checked where
        # an authority is rebuilt from DER, and true by construction in new_mesh_authority).
        object.__setattr__(self, "_leaves", LeafTemplate(self.key, self.mesh_ca.subject))
        not_after = min(self.mesh_ca.not_valid_after_utc, self.intermediate.not_valid_after_utc)
        object.__setattr__(self, "_issuer_not_after", not_after)
        object.__setattr__(
            self, "intermediate_der", self.intermediate.public_bytes(serialization.Encoding.DER)
        )
        object.__setattr__(self, "mesh_ca_der", self.mesh_ca.public_bytes(serialization.Encoding.DER))

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
        return x509.load_der_x509_certificate(
            self.issue_leaf_der(
                public_key,
                sans=sans,
                policy_hash=policy_hash,
                tee=tee,
                workload_secret_id=workload_secret_id,
                now=now,
                validity=validity,
            )
        )

    def issue_leaf_der(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        sans: list[str] | tuple[str, ...],
        policy_hash: bytes,
        tee: Tee,
        workload_secret_id: str = "",
        now: dt.datetime,
        validity: dt.timedelta = LEAF_VALIDITY,
    ) -> bytes:
        """:meth:`issue_leaf` as the DER bytes that were signed (for a caller that only sends them on)."""
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise ValueError("leaf keys are P-256")
        if len(policy_hash) != 32:
            raise ValueError("policy hash is 32 bytes")
        if tee not in ("snp", "tdx"):
            raise ValueError("tee must be 'snp' or 'tdx'")
        not_before = now - BACKDATE
        # A leaf never outlives its issuer: a verifier would reject the chain at the CA's expiry anyway.
        not_after = min(now + validity, self._issuer_not_after)
        tbs = self._leaves.tbs(
            public_key,
            serial=random_serial(),
            not_before=not_before,
            not_after=not_after,
            sans=sans,
            policy_hash=policy_hash,
            tee=tee,
            workload_secret_id=workload_secret_id,
        )
        leaf = self._leaves.sign(tbs)
        if not self._leaves.checked:
            cert = x509.load_der_x509_certificate(leaf)
            self._check_first_leaf(cert, public_key, sans, policy_hash, tee, workload_secret_id)
        return leaf

    def _check_first_leaf(
        self,
        leaf: x509.Certificate,
        public_key: ec.EllipticCurvePublicKey,
        sans: list[str] | tuple[str, ...],
        policy_hash: bytes,
        tee: str,
        workload_secret_id: str,
    ) -> None:
        """Read a generation's first leaf back with cryptography's parser (defence in depth for the template).

        Costs two P-384 verifies per generation. A mismatch is our bug: this authority then issues nothing.
        """
        try:
            leaf.verify_directly_issued_by(self.mesh_ca)
            leaf.verify_directly_issued_by(self.intermediate)
            claims = leaf_claims(leaf)
            expected = LeafClaims(policy_hash=policy_hash, tee=tee, workload_secret_id=workload_secret_id)
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ok = (
                leaf.public_key() == public_key
                and claims == expected
                and list(san) == parse_sans(sans)
                and leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
                == x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
            )
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound) as e:
            raise InternalError("leaf_template", f"a templated leaf does not read back: {e}") from e
        if not ok:
            raise InternalError("leaf_template", "a templated leaf does not say what it was built from")
        self._leaves.checked = True


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
