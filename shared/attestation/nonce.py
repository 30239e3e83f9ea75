"""Stateless, authenticated nonce tokens with a single-use mark (docs/protocol.md §2 and §4).

::

    nonce = expiry_unix_ms (8, BE) ‖ random (8) ‖ HMAC-SHA256(key, label ‖ expiry ‖ random)[:16]

One implementation serves both kinds of nonce, each under its own key and label so that they never
substitute for each other: attestation nonces (:data:`ATTESTATION`, issued by verifier replicas under the
nonce-MAC key) and join nonces (:data:`JOIN`, issued by ready manifest replicas under the join-nonce key).
Any replica holding the key checks MAC and expiry without a lookup. Use is recorded once as a KV ``create``
of the token's mark key in bucket ``nonces`` (TTL > lifetime); ``create`` fails if the key exists. For
attestation nonces the mark's value is the SHA-256 digest of the request that used it, so a *redelivery of the
same request* (a verifier died between marking and acking) is recognised and not mistaken for a replay; a join
nonce is used once, full stop.

A verifier marks the nonce last, so that a forged request cannot burn a genuine one's nonce; before any
public-key work it only *looks* (:func:`check_unused`), so that a replayed request under a new id costs one KV
read, not an evidence verification.
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
_HEAD: Final = struct.Struct(">Q8s")
_STRICT_MARK: Final = b"\x01"  # the value of a strict single-use mark (no request digest)


@dataclass(frozen=True, slots=True)
class NonceKind:
    """What distinguishes one kind of nonce from another: the MAC label and the mark's key prefix."""

    label: bytes
    mark_prefix: str


ATTESTATION: Final = NonceKind(label=b"contrast nonce v1", mark_prefix="")
JOIN: Final = NonceKind(label=b"contrast join nonce v1", mark_prefix="join/")


@dataclass(frozen=True, slots=True)
class NonceToken:
    expiry_ms: int
    random: bytes
    mark_key: str  # the key of its single-use mark in bucket ``nonces``


class NonceAuthority:
    """Issues and checks nonce tokens of one kind under one key."""

    __slots__ = ("_key", "kind", "lifetime_ms")

    def __init__(
        self, key: bytes, *, kind: NonceKind = ATTESTATION, lifetime_ms: int = DEFAULT_LIFETIME_MS
    ) -> None:
        if len(key) != 32:
            raise ValueError("a nonce key is 32 bytes")
        if not 0 < lifetime_ms <= 300_000:
            raise ValueError("nonce lifetime must be in (0, 300] s")
        self._key = bytes(key)
        self.kind = kind
        self.lifetime_ms = lifetime_ms

    def __repr__(self) -> str:
        return f"NonceAuthority(label={self.kind.label!r}, lifetime_ms={self.lifetime_ms})"

    def _mac(self, head: bytes) -> bytes:
        return hmac.new(self._key, self.kind.label + head, hashlib.sha256).digest()[:16]

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
        return NonceToken(expiry_ms=expiry, random=rnd, mark_key=self.kind.mark_prefix + rnd.hex())


async def check_unused(marks: KeyValue, token: NonceToken, request_digest: bytes) -> None:
    """``policy.nonce_reused`` if ``token``'s mark already names another request; it marks nothing.

    A cheap first look (one KV read): a request that passes may still lose to another one at
    :func:`consume`, which alone decides.
    """
    entry = await marks.get(token.mark_key)
    if entry is not None and not hmac.compare_digest(entry.value, request_digest):
        raise PolicyError("nonce_reused", "this nonce was already used by another request")


async def consume(marks: KeyValue, token: NonceToken, request_digest: bytes | None = None) -> None:
    """Mark ``token`` used; ``policy.nonce_reused`` if it already was.

    With ``request_digest`` (attestation), the same digest again is a redelivery of the same request, which
    must come out the same way. Without it (join), any second use is a replay.
    """
    try:
        await marks.create(token.mark_key, _STRICT_MARK if request_digest is None else request_digest)
        return
    except KvConflict:
        pass
    if request_digest is not None:
        entry = await marks.get(token.mark_key)
        if entry is not None and hmac.compare_digest(entry.value, request_digest):
            return
    raise PolicyError("nonce_reused", "this nonce was already used by another request")
