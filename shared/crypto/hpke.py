"""HPKE (RFC 9180) sealing to attested keys: ML-KEM-768+X25519 / HKDF-SHA256 / AES-256-GCM, single-shot.

Secrets leave a Coordinator replica only through :func:`seal`, to a public key that the receiver's
evidence binds in REPORT_DATA. Every use names a :class:`Protocol` and a context (the request id, or the
nonce of a join or recovery), and both go into HPKE's ``info``::

    info = b"contrast hpke v1" ‖ 0x00 ‖ u16(len(protocol)) ‖ protocol ‖ u32(len(context)) ‖ context

``info`` enters the HPKE key schedule, so a ciphertext opens only under the exact protocol and context it was
sealed for: a bundle sealed for one request cannot be replayed as the answer to another, nor a join bundle as
a workload bundle. (The library's single-shot API has no public AAD parameter; in single-shot mode binding
through ``info`` gives the same guarantee, because every message has its own key schedule.)

Public keys travel as ``ML-KEM-768 encapsulation key (1184 bytes) ‖ X25519 public key (32 bytes)``.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from contrast.errors import AuthError, RequestError

SUITE: Final = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
MLKEM768_PUBLIC_KEY_SIZE: Final = 1184
X25519_PUBLIC_KEY_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = MLKEM768_PUBLIC_KEY_SIZE + X25519_PUBLIC_KEY_SIZE
ENC_SIZE: Final = hpke.KEM.MLKEM768_X25519.enc_length()
TAG_SIZE: Final = 16
# Largest plaintext we ever seal (a certificate bundle or join bundle is a few KiB); bounds the work an
# attacker-supplied ciphertext can cause.
MAX_PLAINTEXT_SIZE: Final = 1 << 20

_INFO_PREFIX: Final = b"contrast hpke v1\x00"


class Protocol(enum.Enum):
    """One label per protocol that seals something, so ciphertexts never cross protocols."""

    WORKLOAD_BUNDLE = "workload-bundle"  # CA → initializer: leaf chain, mesh CA, root CA, workload secret
    COORDINATOR_JOIN = "coordinator-join"  # manifest service → joining replica: the keys its role needs
    RECOVERY = "recovery"  # seed-share owner → stale manifest replica: seed and salt
    PEER_RECOVERY = "peer-recovery"  # ready manifest replica → stale/new manifest replica: seed and salt


def build_info(protocol: Protocol, context: bytes) -> bytes:
    """The HPKE ``info`` for ``protocol`` and ``context`` (unambiguous: every part is length-prefixed)."""
    p = protocol.value.encode("ascii")
    return _INFO_PREFIX + struct.pack(">H", len(p)) + p + struct.pack(">I", len(context)) + bytes(context)


class HpkePublicKey:
    """A recipient's ML-KEM-768+X25519 public key."""

    __slots__ = ("_key", "_raw")

    def __init__(self, raw: bytes) -> None:
        """Decode ``raw`` (exactly :data:`PUBLIC_KEY_SIZE` bytes); raises ``request.invalid_hpke_key``."""
        raw = bytes(raw)
        if len(raw) != PUBLIC_KEY_SIZE:
            raise RequestError("invalid_hpke_key", f"HPKE public key must be {PUBLIC_KEY_SIZE} bytes")
        try:
            mk = mlkem.MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUBLIC_KEY_SIZE])
            xk = x25519.X25519PublicKey.from_public_bytes(raw[MLKEM768_PUBLIC_KEY_SIZE:])
        except ValueError as e:
            raise RequestError("invalid_hpke_key", f"HPKE public key does not decode: {e}") from e
        self._raw = raw
        self._key = hpke.MLKEM768X25519PublicKey(mk, xk)

    @classmethod
    def _of_keys(cls, mk: mlkem.MLKEM768PublicKey, xk: x25519.X25519PublicKey) -> HpkePublicKey:
        # Our own freshly generated key: nothing to decode or validate (saves a decode per key pair).
        pk = cls.__new__(cls)
        pk._raw = mk.public_bytes_raw() + xk.public_bytes_raw()
        pk._key = hpke.MLKEM768X25519PublicKey(mk, xk)
        return pk

    def __bytes__(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HpkePublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def seal(self, protocol: Protocol, context: bytes, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` to this key for ``protocol``/``context``; returns enc ‖ ciphertext ‖ tag."""
        if len(plaintext) > MAX_PLAINTEXT_SIZE:
            raise ValueError("plaintext too large to seal")
        return SUITE.encrypt(plaintext, self._key, info=build_info(protocol, context))


class HpkePrivateKey:
    """A receiver's ML-KEM-768+X25519 key pair. It lives only in the memory of the party that made it."""

    __slots__ = ("_key", "_public")

    def __init__(self, mlkem_key: mlkem.MLKEM768PrivateKey, x25519_key: x25519.X25519PrivateKey) -> None:
        self._key = hpke.MLKEM768X25519PrivateKey(mlkem_key, x25519_key)
        self._public = HpkePublicKey._of_keys(mlkem_key.public_key(), x25519_key.public_key())

    @classmethod
    def generate(cls) -> HpkePrivateKey:
        return cls(mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    def __repr__(self) -> str:
        return "HpkePrivateKey(<secret>)"

    def public_key(self) -> HpkePublicKey:
        return self._public

    def public_bytes(self) -> bytes:
        return bytes(self._public)

    def open(self, protocol: Protocol, context: bytes, sealed: bytes) -> bytes:
        """Decrypt a :meth:`HpkePublicKey.seal` output; any mismatch raises ``auth.hpke_open_failed``."""
        if len(sealed) < ENC_SIZE + TAG_SIZE or len(sealed) > ENC_SIZE + TAG_SIZE + MAX_PLAINTEXT_SIZE:
            raise AuthError("hpke_open_failed", "sealed message has an impossible length")
        try:
            return SUITE.decrypt(sealed, self._key, info=build_info(protocol, context))
        except (InvalidTag, ValueError) as e:
            # Wrong key, wrong protocol/context, or tampered bytes: indistinguishable by design.
            raise AuthError("hpke_open_failed", "sealed message does not open for this key/context") from e


def seal(public_key: bytes | HpkePublicKey, protocol: Protocol, context: bytes, plaintext: bytes) -> bytes:
    """Seal ``plaintext`` to ``public_key`` (raw bytes are decoded and checked first)."""
    pk = public_key if isinstance(public_key, HpkePublicKey) else HpkePublicKey(public_key)
    return pk.seal(protocol, context, plaintext)
