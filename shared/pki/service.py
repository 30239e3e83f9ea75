"""Coordinator service certificates: a joined replica's key, certified by the root CA with its role.

A replica that joined the Coordinator trust domain gets a certificate for its signing key (P-256 or P-384),
issued directly by the root CA, with its role in the private :data:`contrast.pki.oids.SERVICE_ROLE`
extension, the policy hash of its verified join evidence in :data:`contrast.pki.oids.SERVICE_POLICY_HASH`
and a URI SAN ``urn:contrast:coordinator:<role>:<replica-id>``. A CA replica accepts a verdict only if
:func:`verify_service_cert` accepts the signer's certificate for role ``verifier`` *and* the certified policy
hash is still a ``Role: coordinator`` entry bound to the ``verifier`` role in the manifest the verdict is
checked against: a certificate outlives no manifest update that removes its replica's policy. A certificate
without the policy hash is refused.

Mesh leaves never carry the role extension and are never issued by the root directly, so a workload
certificate can never pass as a service certificate.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from contrast.errors import AuthError
from contrast.pki import der, oids
from contrast.pki.mesh import BACKDATE, random_serial
from contrast.pki.root import ROOT_COMMON_NAME, name

SERVICE_CERT_VALIDITY: Final = dt.timedelta(days=30)
_REPLICA_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_NOT_LABEL = re.compile(r"[^a-z0-9-]+")
MAX_CERT_DER: Final = 16 * 1024
POLICY_HASH_SIZE: Final = 32


class ServiceRole(enum.Enum):
    MANIFEST = "manifest"
    VERIFIER = "verifier"
    CA = "ca"


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """A verified service certificate: who signed, in which role, with which key."""

    certificate: x509.Certificate
    role: ServiceRole
    replica_id: str
    public_key: ec.EllipticCurvePublicKey
    policy_hash: bytes  # from the joiner's verified evidence at join time


def replica_label(name: str) -> str:
    """A replica's name as a DNS-label-like id (1-63 characters of ``[a-z0-9-]``).

    The one sanitizer of replica names: service certificates carry it, and a manifest replica's own recovery
    endpoint uses it as its subject token."""
    label = _NOT_LABEL.sub("-", name.lower()).strip("-")[:63].strip("-")
    return label or "replica"


def _uri(role: ServiceRole, replica_id: str) -> str:
    return f"urn:contrast:coordinator:{role.value}:{replica_id}"


def issue_service_cert(
    root_key: ec.EllipticCurvePrivateKey,
    root_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    *,
    role: ServiceRole,
    replica_id: str,
    policy_hash: bytes,
    now: dt.datetime,
    validity: dt.timedelta = SERVICE_CERT_VALIDITY,
) -> x509.Certificate:
    """Certify a joined replica's key for ``role``. ``replica_id`` is a DNS-label-like name for audit;
    ``policy_hash`` must come from the joiner's *verified* evidence (HOST_DATA / MR_CONFIG_ID), never from
    anything the joiner merely asserted."""
    if root_cert.public_key() != root_key.public_key():
        raise ValueError("root key and root certificate do not match")
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in (
        "secp256r1",
        "secp384r1",
    ):
        raise ValueError("service keys are ECDSA P-256 or P-384")
    if not _REPLICA_ID.match(replica_id):
        raise ValueError("replica id must be 1-63 chars of [a-z0-9-]")
    if not isinstance(policy_hash, bytes) or len(policy_hash) != POLICY_HASH_SIZE:
        raise ValueError("a service certificate's policy hash is 32 bytes")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(f"system:coordinator:{role.value}:{replica_id}"))
        .issuer_name(root_cert.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + validity, root_cert.not_valid_after_utc))
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
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(_uri(role, replica_id))]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .add_extension(x509.UnrecognizedExtension(oids.SERVICE_ROLE, der.utf8_string(role.value)), False)
        .add_extension(
            x509.UnrecognizedExtension(oids.SERVICE_POLICY_HASH, der.octet_string(policy_hash)), False
        )
    )
    return builder.sign(root_key, hashes.SHA384())


def service_role(cert: x509.Certificate) -> ServiceRole:
    """The role a certificate claims (unverified); ``auth.bad_service_cert`` if it claims none."""
    try:
        ext = cert.extensions.get_extension_for_oid(oids.SERVICE_ROLE).value
    except x509.ExtensionNotFound:
        raise AuthError("bad_service_cert", "certificate carries no Coordinator service role") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise AuthError("bad_service_cert", "service role extension has an unexpected type")
    try:
        return ServiceRole(der.decode_utf8_string(ext.value))
    except (ValueError, UnicodeDecodeError) as e:
        raise AuthError("bad_service_cert", "service role extension is malformed or unknown") from e


def service_policy_hash(cert: x509.Certificate) -> bytes:
    """The policy hash a certificate was issued for (unverified); ``auth.bad_service_cert`` if it has none.

    Certificates issued before this extension existed are refused, not grandfathered: without it nothing
    ties the certificate to a manifest entry that an update can withdraw.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(oids.SERVICE_POLICY_HASH).value
    except x509.ExtensionNotFound:
        raise AuthError("bad_service_cert", "certificate carries no Coordinator policy hash") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise AuthError("bad_service_cert", "policy hash extension has an unexpected type")
    try:
        value = der.decode_octet_string(ext.value)
    except ValueError as e:
        raise AuthError("bad_service_cert", "policy hash extension is malformed") from e
    if len(value) != POLICY_HASH_SIZE:
        raise AuthError("bad_service_cert", "policy hash extension is not 32 bytes")
    return value


def verify_service_cert(
    cert_der: bytes, root_cert: x509.Certificate, role: ServiceRole, now: dt.datetime
) -> ServiceIdentity:
    """Accept ``cert_der`` only if the root CA issued it directly, it is valid at ``now``, has ``role`` and
    names a 32-byte policy hash. Whether that policy is still allowed is the caller's check against *its*
    manifest (:meth:`contrast.coordinator.manifest_format.Manifest.coordinator_policy_hashes`).

    Raises ``auth.bad_service_cert`` (malformed, wrong issuer, bad signature, expired) or ``auth.wrong_role``.
    """
    if len(cert_der) > MAX_CERT_DER:
        raise AuthError("bad_service_cert", "service certificate too large")
    if root_cert.subject != name(ROOT_COMMON_NAME):
        raise ValueError("root_cert is not a Contrast root certificate")
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError as e:
        raise AuthError("bad_service_cert", "service certificate does not parse") from e
    # Issued by the root itself: no intermediate may stand between them (mesh CAs issue only leaves).
    if cert.issuer != root_cert.subject:
        raise AuthError("bad_service_cert", "service certificate is not issued by the root CA")
    try:
        cert.verify_directly_issued_by(root_cert)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise AuthError("bad_service_cert", "service certificate signature does not verify") from e
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([root_cert]))
        .time(now)
        .max_chain_depth(0)
        .build_client_verifier()
    )
    try:
        verifier.verify(cert, [])
    except verification.VerificationError as e:
        raise AuthError("bad_service_cert", f"service certificate rejected: {e}") from e
    got = service_role(cert)
    if got is not role:
        raise AuthError("wrong_role", f"service certificate has role {got.value}, need {role.value}")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    prefix = f"urn:contrast:coordinator:{role.value}:"
    if len(uris) != 1 or not uris[0].startswith(prefix):
        raise AuthError("bad_service_cert", "service certificate SAN does not name its role")
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise AuthError("bad_service_cert", "service certificate key is not ECDSA")
    return ServiceIdentity(
        certificate=cert,
        role=role,
        replica_id=uris[0][len(prefix) :],
        public_key=pub,
        policy_hash=service_policy_hash(cert),
    )
