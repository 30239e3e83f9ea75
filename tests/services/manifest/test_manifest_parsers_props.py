"""Property tests: the parsers of this service and its CLI fail closed, with typed errors, on any input."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.attestation.nonce import JOIN, NonceAuthority
from contrast.cli.exitcodes import UsageError
from contrast.cli.signature import TransitionSignature, decode, encode
from contrast.coordinator.user_protocol import open_recovery_secret, recover_subject
from contrast.crypto.hpke import HpkePrivateKey
from contrast.errors import ContrastError, PolicyError
from contrast.wire.v1 import (
    AttestedReply,
    HistoryExport,
    JoinGrant,
    JoinReply,
    JoinRequest,
    RecoverRequest,
    RecoveryChallenge,
    SetManifestRequest,
    decoder,
)

TYPES = [
    AttestedReply,
    HistoryExport,
    JoinGrant,
    JoinReply,
    JoinRequest,
    RecoverRequest,
    RecoveryChallenge,
    SetManifestRequest,
]
KEY = HpkePrivateKey.generate()
NONCES = NonceAuthority(b"\x07" * 32, kind=JOIN)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=512), st.sampled_from(TYPES))
def test_wire_decoders_reject_garbage_with_msgspec_errors(data: bytes, t: type[msgspec.Struct]) -> None:
    with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
        decoder(t).decode(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=256))
def test_signature_file_parser(data: bytes) -> None:
    try:
        sig = decode(data, "f")
    except UsageError:
        return
    assert len(sig.manifest_hash) == len(sig.previous_transition) == 32


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), st.binary(max_size=80))
def test_signature_file_round_trip(a: bytes, b: bytes, sig: bytes) -> None:
    t = TransitionSignature(a, b, sig)
    assert decode(encode(t), "f") == t


@settings(max_examples=300)
@given(st.binary(max_size=48))
def test_forged_join_nonces_are_unknown(data: bytes) -> None:
    with pytest.raises(PolicyError) as e:
        NONCES.check(data, 1_000_000_000)
    assert e.value.code in ("policy.nonce_unknown", "policy.nonce_expired")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=1400), st.binary(min_size=32, max_size=32), st.integers(1, 2**64 - 1))
def test_recovery_secret_garbage(sealed: bytes, nonce: bytes, generation: int) -> None:
    with pytest.raises(ContrastError) as e:
        open_recovery_secret(KEY, nonce, generation, nonce[::-1], sealed)
    assert e.value.code.startswith(("auth.", "request."))


@given(st.text(max_size=40))
def test_recover_subject_is_one_token(name: str) -> None:
    if not name or not set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"):
        with pytest.raises(ContrastError) as e:
            recover_subject(name)
        assert e.value.code == "request.bad_replica"
        return
    subject = recover_subject(name)
    assert subject.count(".") == 4
    assert subject.endswith("." + name)
