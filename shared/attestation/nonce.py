"""Stateless, authenticated nonce tokens with a single-use mark (docs/protocol.md §2, DESIGN.md §3.1).

::

    nonce = expiry_unix_ms (8, BE) ‖ random (8) ‖ HMAC-SHA256(key, "contrast nonce v1" ‖ expiry ‖ random)[:16]

Any replica holding the nonce-MAC key checks MAC and expiry without a lookup. Use is recorded once as a KV
``create`` of ``hex(random)`` in bucket ``nonces`` (TTL > lifetime); ``create`` fails if the key exists.
The mark's value is the SHA-256 digest of the request that used it, so a *redelivery of the same request*
(a verifier died between marking and acking) is recognised and not mistaken for a replay.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from typing import Final

from contrast.errors import PolicyError
from contrast.kv import KeyValue, KvConflict

NONCE_SIZE: Final = 32
DEFAULT_LIFETIME_MS: Final = 10_000
# Clock skew we tolerate between the replica that issued a nonce and the one that checks it.
MAX_SKEW_MS: Final = 2_000
_LABEL: Final = b"contrast nonce v1"
_HEAD: Final = struct.Struct(">Q8s")


@dataclass(frozen=True, slots=True)
class NonceToken:
    expiry_ms: int
    random: bytes

    @property
    def mark_key(self) -> str:
        return self.random.hex()


class NonceAuthority:
    """Issues and checks nonce tokens under one nonce-MAC key (held by verifier replicas)."""

    __slots__ = ("_key", "lifetime_ms")

    def __init__(self, key: bytes, *, lifetime_ms: int = DEFAULT_LIFETIME_MS) -> None:
        if len(key) != 32:
            raise ValueError("the nonce-MAC key is 32 bytes")
        if not 0 < lifetime_ms <= 300_000:
            raise ValueError("nonce lifetime must be in (0, 300] s")
        self._key = bytes(key)
        self.lifetime_ms = lifetime_ms

    def __repr__(self) -> str:
        return f"NonceAuthority(lifetime_ms={self.lifetime_ms})"

    def _mac(self, head: bytes) -> bytes:
        return hmac.new(self._key, _LABEL + head, hashlib.sha256).digest()[:16]

    def issue(self, now_ms: int) -> bytes:
        head = _HEAD.pack(now_ms + self.lifetime_ms, secrets.token_bytes(8))
        return head + self._mac(head)

    def check(self, nonce: bytes, now_ms: int) -> NonceToken:
        """MAC first (constant time), then expiry: ``policy.nonce_unknown`` / ``policy.nonce_expired``."""
        if len(nonce) != NONCE_SIZE:
            raise PolicyError("nonce_unknown", "a nonce is 32 bytes")
        head, tag = nonce[:16], nonce[16:]
        if not hmac.compare_digest(self._mac(head), tag):
            raise PolicyError("nonce_unknown", "the nonce was not issued by this Coordinator")
        expiry, rnd = _HEAD.unpack(head)
        if now_ms > expiry:
            raise PolicyError("nonce_expired", f"the nonce expired {now_ms - expiry} ms ago")
        if expiry - now_ms > self.lifetime_ms + MAX_SKEW_MS:
            # Only a holder of the key can mint this; refuse it anyway rather than honour a far future.
            raise PolicyError("nonce_unknown", "the nonce's expiry lies beyond its lifetime")
        return NonceToken(expiry_ms=expiry, random=rnd)


async def consume(marks: KeyValue, token: NonceToken, request_digest: bytes) -> None:
    """Mark ``token`` used by the request with ``request_digest``; ``policy.nonce_reused`` for another one.

    The same digest again is a redelivery of the same request, which must come out the same way.
    """
    try:
        await marks.create(token.mark_key, request_digest)
        return
    except KvConflict:
        pass
    entry = await marks.get(token.mark_key)
    if entry is not None and hmac.compare_digest(entry.value, request_digest):
        return
    raise PolicyError("nonce_reused", "this nonce was already used by another request")
