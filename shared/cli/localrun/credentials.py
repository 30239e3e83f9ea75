"""Check what an emulated pod's initializer wrote against what the data owner verified.

``contrast verify`` gives the owner the Coordinator's root and mesh CA, attested against the local manifest.
A pod's credentials are believed only if they chain to exactly those CAs, carry the pod's own launch policy
hash, the SANs and workload secret ID of its manifest entry, and come with a private key that matches the
leaf and is not readable by others.
"""

from __future__ import annotations

import datetime as dt
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.errors import AuthError
from contrast.pki.chain import verify_leaf
from contrast.pki.mesh import leaf_claims

WORKLOAD_SECRET_BYTES = 64


class CredentialsRejected(Exception):
    """The pod's files do not match what the owner verified; the message says which check failed."""


@dataclass(frozen=True)
class PodCertificate:
    serial: int
    sans: list[str]
    not_after: dt.datetime
    policy_hash: bytes
    tee: str
    workload_secret_id: str
    has_workload_secret: bool


def _private(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CredentialsRejected(f"{path.name} is readable by others (mode {mode:o})")
    return path.read_bytes()


def check_pod(
    contrast_dir: Path,
    *,
    policy_hash: bytes,
    sans: list[str],
    workload_secret_id: str,
    mesh_ca: x509.Certificate,
    root_ca: x509.Certificate,
    now: dt.datetime,
) -> PodCertificate:
    """Raise :class:`CredentialsRejected` unless the files under ``contrast_dir`` are what they must be."""
    tls = contrast_dir / "tls-config"
    try:
        chain = x509.load_pem_x509_certificates((tls / "certChain.pem").read_bytes())
        pod_mesh = x509.load_pem_x509_certificate((tls / "mesh-ca.pem").read_bytes())
        pod_root = x509.load_pem_x509_certificate((tls / "coordinator-root-ca.pem").read_bytes())
        key = serialization.load_pem_private_key(_private(tls / "key.pem"), None)
    except (OSError, ValueError) as e:
        raise CredentialsRejected(f"unreadable credentials: {e}") from e
    if pod_mesh != mesh_ca:
        raise CredentialsRejected("mesh-ca.pem is not the mesh CA that `contrast verify` attested")
    if pod_root != root_ca:
        raise CredentialsRejected(
            "coordinator-root-ca.pem is not the root CA that `contrast verify` attested"
        )
    if len(chain) != 2:
        raise CredentialsRejected(
            f"certChain.pem holds {len(chain)} certificates, expected leaf + intermediate"
        )
    leaf, intermediate = chain
    try:
        verify_leaf(leaf, anchor=mesh_ca, now=now)
        verify_leaf(leaf, anchor=root_ca, intermediates=[intermediate], now=now)
    except AuthError as e:
        raise CredentialsRejected(f"{e.code}: {e.message}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != leaf.public_key():
        raise CredentialsRejected("key.pem is not the private key of the leaf certificate")
    try:
        claims = leaf_claims(leaf)
        dns = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    except (ValueError, x509.ExtensionNotFound) as e:
        raise CredentialsRejected(f"not a Contrast mesh leaf: {e}") from e
    if claims.policy_hash != policy_hash:
        raise CredentialsRejected("the leaf names another policy hash than the pod was launched with")
    if sorted(dns) != sorted(sans):
        raise CredentialsRejected(f"the leaf's SANs {dns} differ from the manifest entry's {sans}")
    if claims.workload_secret_id != workload_secret_id:
        raise CredentialsRejected("the leaf's workload secret ID differs from the manifest entry's")
    secret_path = contrast_dir / "secrets" / "workload-secret-seed"
    has_secret = secret_path.exists()
    if workload_secret_id and not has_secret:
        raise CredentialsRejected("the manifest entry has a workload secret ID but no secret was written")
    if has_secret:
        try:
            secret = bytes.fromhex(_private(secret_path).decode())
        except ValueError as e:
            raise CredentialsRejected("workload-secret-seed is not hex") from e
        if len(secret) != WORKLOAD_SECRET_BYTES:
            raise CredentialsRejected(
                f"workload secret is {len(secret)} bytes, expected {WORKLOAD_SECRET_BYTES}"
            )
    return PodCertificate(
        serial=leaf.serial_number,
        sans=list(dns),
        not_after=leaf.not_valid_after_utc,
        policy_hash=claims.policy_hash,
        tee=claims.tee,
        workload_secret_id=claims.workload_secret_id,
        has_workload_secret=has_secret,
    )
