"""HPKE sealing: round trips, and every binding (key, protocol, context, bytes) fails closed."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.crypto.hpke import (
    ENC_SIZE,
    PUBLIC_KEY_SIZE,
    HpkePrivateKey,
    HpkePublicKey,
    Protocol,
    build_info,
    seal,
)
from contrast.errors import AuthError, RequestError

RECIPIENT = HpkePrivateKey.generate()


def test_round_trip_and_size() -> None:
    ct = seal(RECIPIENT.public_bytes(), Protocol.WORKLOAD_BUNDLE, b"req-1", b"secret bundle")
    assert len(ct) == ENC_SIZE + len(b"secret bundle") + 16
    assert b"secret bundle" not in ct
    assert RECIPIENT.open(Protocol.WORKLOAD_BUNDLE, b"req-1", ct) == b"secret bundle"


def test_public_key_encoding_is_mlkem_then_x25519() -> None:
    m, x = mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    key = HpkePrivateKey(m, x)
    raw = key.public_bytes()
    assert len(raw) == PUBLIC_KEY_SIZE
    assert raw == m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
    assert HpkePublicKey(raw) == key.public_key()


@pytest.mark.parametrize(
    ("protocol", "context"),
    [(Protocol.WORKLOAD_BUNDLE, b"req-2"), (Protocol.COORDINATOR_JOIN, b"req-1"), (Protocol.RECOVERY, b"")],
)
def test_wrong_protocol_or_context_fails(protocol: Protocol, context: bytes) -> None:
    ct = seal(RECIPIENT.public_key(), Protocol.WORKLOAD_BUNDLE, b"req-1", b"x")
    with pytest.raises(AuthError) as e:
        RECIPIENT.open(protocol, context, ct)
    assert e.value.code == "auth.hpke_open_failed"


def test_wrong_key_fails() -> None:
    ct = seal(RECIPIENT.public_key(), Protocol.RECOVERY, b"n", b"seed")
    with pytest.raises(AuthError):
        HpkePrivateKey.generate().open(Protocol.RECOVERY, b"n", ct)


def test_every_bit_flip_position_class_fails() -> None:
    ct = seal(RECIPIENT.public_key(), Protocol.RECOVERY, b"n", b"seed material")
    for pos in (0, ENC_SIZE - 1, ENC_SIZE, len(ct) - 1):
        bad = bytearray(ct)
        bad[pos] ^= 1
        with pytest.raises(AuthError):
            RECIPIENT.open(Protocol.RECOVERY, b"n", bytes(bad))


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=ENC_SIZE + 64))
def test_garbage_never_opens(data: bytes) -> None:
    with pytest.raises(AuthError):
        RECIPIENT.open(Protocol.WORKLOAD_BUNDLE, b"", data)


@pytest.mark.parametrize("raw", [b"", bytes(PUBLIC_KEY_SIZE - 1), bytes(PUBLIC_KEY_SIZE + 1)])
def test_public_key_length_is_exact(raw: bytes) -> None:
    with pytest.raises(RequestError) as e:
        HpkePublicKey(raw)
    assert e.value.code == "request.invalid_hpke_key"


def test_info_is_unambiguous() -> None:
    # Moving bytes between the protocol and context fields must change info.
    assert build_info(Protocol.RECOVERY, b"") != build_info(Protocol.RECOVERY, b"\x00")
    assert len({build_info(p, b"c") for p in Protocol}) == len(Protocol)


def test_hpke_key_of_a_request_is_the_one_sealed_to() -> None:
    # The CA seals to the verdict's HPKE key; the request id is the HPKE context: another id cannot open it.
    from contrast.crypto.hpke import Protocol

    k = HpkePrivateKey.generate()
    sealed = k.public_key().seal(Protocol.WORKLOAD_BUNDLE, b"request-1", secrets.token_bytes(64))
    with pytest.raises(AuthError):
        k.open(Protocol.WORKLOAD_BUNDLE, b"request-2", sealed)
