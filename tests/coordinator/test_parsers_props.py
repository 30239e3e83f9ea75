"""Property tests: the byte-level parsers of the coordinator core never crash and never accept garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.coordinator.history import LATEST_SIZE, LatestPointer, Transition
from contrast.crypto.kdf import SeedEngine
from contrast.crypto.seedshare import decode_seed_shares
from contrast.errors import RequestError, StoreError
from contrast.pki import der
from contrast.pki.san import parse_san

KEY = SeedEngine(b"\x01" * 64, b"\x02" * 32).history_signing_key()


@settings(max_examples=300)
@given(st.binary(max_size=LATEST_SIZE + 8))
def test_latest_pointer_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(StoreError):
        LatestPointer.verify(data, KEY.public_key())


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32), st.integers(1, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_latest_pointer_round_trip(th: bytes, gen: int, prev: int) -> None:
    p = LatestPointer.sign(KEY, th, gen, prev)
    assert LatestPointer.verify(p.encode(), KEY.public_key()) == p


@given(st.binary(max_size=128))
def test_transition_decode(data: bytes) -> None:
    if len(data) == 64:
        assert Transition.decode(data).encode() == data
    else:
        with pytest.raises(StoreError):
            Transition.decode(data)


@given(st.binary(max_size=300))
def test_der_decode_is_exact(data: bytes) -> None:
    try:
        value = der.decode_octet_string(data)
    except ValueError:
        return
    assert der.octet_string(value) == data  # only canonical encodings are accepted


@given(st.binary(max_size=512))
def test_seed_shares_garbage(data: bytes) -> None:
    with pytest.raises(RequestError):
        decode_seed_shares(data)


@given(st.text(max_size=80))
def test_san_parse_total(value: str) -> None:
    try:
        name = parse_san(value)
    except ValueError:
        return
    assert name.value is not None
