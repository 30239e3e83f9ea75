"""Nonce tokens: MAC, expiry and the single-use mark that tolerates only a redelivery."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.attestation.nonce import NonceAuthority, consume
from contrast.errors import PolicyError
from contrast.testing.kv import MemoryKeyValue

KEY = bytes(range(32))
H_VERIFIER = b"\xc0" * 32  # the Coordinator policy the test verifier joined with
ALLOWED = frozenset({H_VERIFIER, b"\xc1" * 32})
NOW_MS = 1_800_000_000_000


def test_nonce_round_trip_and_expiry() -> None:
    auth = NonceAuthority(KEY, lifetime_ms=10_000)
    n = auth.issue(NOW_MS)
    assert len(n) == 32
    assert auth.check(n, NOW_MS + 9_999).expiry_ms == NOW_MS + 10_000
    with pytest.raises(PolicyError) as e:
        auth.check(n, NOW_MS + 10_001)
    assert e.value.code == "policy.nonce_expired"
    with pytest.raises(PolicyError) as e:
        NonceAuthority(bytes(32)).check(n, NOW_MS)  # another Coordinator's key
    assert e.value.code == "policy.nonce_unknown"


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=64))
def test_no_forged_nonce_passes(blob: bytes) -> None:
    with pytest.raises(PolicyError) as e:
        NonceAuthority(KEY).check(blob, NOW_MS)
    assert e.value.code in ("policy.nonce_unknown", "policy.nonce_expired")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 31), st.integers(1, 255))
def test_any_bit_flip_breaks_the_nonce(pos: int, flip: int) -> None:
    auth = NonceAuthority(KEY)
    n = bytearray(auth.issue(NOW_MS))
    n[pos] ^= flip
    with pytest.raises(PolicyError):
        auth.check(bytes(n), NOW_MS)


async def test_single_use_mark_tolerates_redelivery_only() -> None:
    auth, marks = NonceAuthority(KEY), MemoryKeyValue()
    token = auth.check(auth.issue(NOW_MS), NOW_MS)
    await consume(marks, token, b"a" * 32)
    await consume(marks, token, b"a" * 32)  # the same request redelivered
    with pytest.raises(PolicyError) as e:
        await consume(marks, token, b"b" * 32)
    assert e.value.code == "policy.nonce_reused"
