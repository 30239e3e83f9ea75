"""Every key the Coordinator derives from its secret seed, and how.

The first ``set`` draws a 64-byte **seed** and a 32-byte **salt** from the OS CSPRNG. Everything long-lived
is a pure function of (seed, salt), so that recovery from seed shares restores the same root CA key,
history-signing key and workload secrets. Each derivation is one HKDF-SHA256 (RFC 5869) call::

    okm = HKDF-SHA256(IKM = seed, salt = salt, info = label, L)

with a fixed, versioned ``label`` per key. Distinct labels make the outputs independent (HKDF's PRF
property), so a replica that is handed one derived key (a verifier gets the nonce-MAC key) learns nothing
about the others or about the seed.

=====================  =====================================  =======================================
key                    label (``info``)                       output
=====================  =====================================  =======================================
root CA key            ``contrast root ca key v1``            64 bytes → P-384 scalar (see below)
history-signing key    ``contrast history signing key v1``    32 bytes → Ed25519 private key
pod-state secret       ``contrast pod state secret v1``       32 bytes
nonce-MAC key          ``contrast nonce mac key v1``          32 bytes (HMAC-SHA256 nonce tokens)
join-nonce key         ``contrast join nonce key v1``         32 bytes (HMAC-SHA256 join nonces)
=====================  =====================================  =======================================

**Root CA scalar.** ECDSA needs ``d`` uniform in [1, n-1]. We take 64 bytes (384 + 128 bits) of HKDF
output as a big-endian integer ``x`` and set ``d = (x mod (n-1)) + 1``. Because ``x`` has 128 more bits
than ``n``, the statistical distance from uniform is below 2^-128 (FIPS 186-5 A.4.1, "extra random bits"),
with no rejection loop and no failure case.

**Workload secrets** come from the pod-state secret, not from the seed directly, so that a CA replica holds
the pod-state secret without holding the seed::

    workload_secret(id) = HKDF-SHA256(IKM = pod_state_secret, salt = none,
                                      info = "WORKLOAD SECRET ID: " ‖ id, L = 64)

The history key is Ed25519 because its signatures are deterministic and fast to verify on every read.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEED_SIZE: Final = 64
SALT_SIZE: Final = 32
WORKLOAD_SECRET_SIZE: Final = 64

LABEL_ROOT_CA_KEY: Final = b"contrast root ca key v1"
LABEL_HISTORY_SIGNING_KEY: Final = b"contrast history signing key v1"
LABEL_POD_STATE_SECRET: Final = b"contrast pod state secret v1"
LABEL_NONCE_MAC_KEY: Final = b"contrast nonce mac key v1"
# Separate from the nonce-MAC key that verifiers hold: only seed holders (manifest replicas) mint join nonces.
LABEL_JOIN_NONCE_KEY: Final = b"contrast join nonce key v1"
WORKLOAD_SECRET_INFO_PREFIX: Final = b"WORKLOAD SECRET ID: "

# Order of the P-384 base point (SEC 2, section 2.5.1).
P384_ORDER: Final = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973", 16
)


def hkdf_sha256(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """One RFC 5869 HKDF-SHA256 extract-and-expand."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def scalar_from_bytes(okm: bytes, order: int = P384_ORDER) -> int:
    """Map ≥ (bits(order) + 128) uniform bits to a scalar in [1, order-1] with bias below 2^-128."""
    if len(okm) * 8 < order.bit_length() + 128:
        raise ValueError("need at least 128 extra bits of key material to reduce without bias")
    return int.from_bytes(okm, "big") % (order - 1) + 1


def generate_seed() -> tuple[bytes, bytes]:
    """A fresh (seed, salt) for the first ``set``."""
    return secrets.token_bytes(SEED_SIZE), secrets.token_bytes(SALT_SIZE)


def derive_workload_secret(pod_state_secret: bytes, workload_secret_id: str) -> bytes:
    """The 64-byte workload secret for ``workload_secret_id``, from the pod-state secret."""
    if len(pod_state_secret) != 32:
        raise ValueError("pod-state secret is 32 bytes")
    if not workload_secret_id:
        raise ValueError("workload secret id must not be empty")
    info = WORKLOAD_SECRET_INFO_PREFIX + workload_secret_id.encode("utf-8")
    return hkdf_sha256(pod_state_secret, None, info, WORKLOAD_SECRET_SIZE)


class SeedEngine:
    """All keys derived from one (seed, salt). Holds secrets: never log, pickle or send it.

    Construction validates sizes; every accessor is a pure derivation (the results are cached because the
    P-384 key construction is not free).
    """

    __slots__ = ("_history_key", "_root_key", "_salt", "_seed")

    def __init__(self, seed: bytes, salt: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"seed must be {SEED_SIZE} bytes")
        if len(salt) != SALT_SIZE:
            raise ValueError(f"salt must be {SALT_SIZE} bytes")
        self._seed = bytes(seed)
        self._salt = bytes(salt)
        self._root_key: ec.EllipticCurvePrivateKey | None = None
        self._history_key: ed25519.Ed25519PrivateKey | None = None

    def __repr__(self) -> str:
        return "SeedEngine(<secret>)"

    @property
    def salt(self) -> bytes:
        return self._salt

    @property
    def seed(self) -> bytes:
        """The raw seed: only for making seed shares and for sealing to a joining manifest replica."""
        return self._seed

    def matches(self, seed: bytes, salt: bytes) -> bool:
        """Constant-time comparison with another (seed, salt)."""
        return hmac.compare_digest(self._seed + self._salt, bytes(seed) + bytes(salt))

    def _derive(self, label: bytes, length: int) -> bytes:
        return hkdf_sha256(self._seed, self._salt, label, length)

    def root_ca_key(self) -> ec.EllipticCurvePrivateKey:
        """The deterministic P-384 root CA key."""
        if self._root_key is None:
            d = scalar_from_bytes(self._derive(LABEL_ROOT_CA_KEY, 64))
            self._root_key = ec.derive_private_key(d, ec.SECP384R1())
        return self._root_key

    def history_signing_key(self) -> ed25519.Ed25519PrivateKey:
        """The Ed25519 key that signs the ``latest`` history pointer."""
        if self._history_key is None:
            raw = self._derive(LABEL_HISTORY_SIGNING_KEY, 32)
            self._history_key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        return self._history_key

    def pod_state_secret(self) -> bytes:
        return self._derive(LABEL_POD_STATE_SECRET, 32)

    def nonce_mac_key(self) -> bytes:
        return self._derive(LABEL_NONCE_MAC_KEY, 32)

    def join_nonce_key(self) -> bytes:
        return self._derive(LABEL_JOIN_NONCE_KEY, 32)

    def workload_secret(self, workload_secret_id: str) -> bytes:
        return derive_workload_secret(self.pod_state_secret(), workload_secret_id)
