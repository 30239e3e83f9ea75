"""Signed envelopes tied to a Coordinator replica's statement (docs/protocol.md §1)."""

from __future__ import annotations

import datetime as dt
import hashlib

import msgspec
import pytest

from contrast.coordinator.statement import CoordinatorIdentity, open_envelope
from contrast.errors import ContrastError
from contrast.evidence.binding import Label, report_data
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.verifier import EvidenceVerifier
from contrast.platform.emulated import EmulatedSnp
from contrast.wire.v1 import SignedEnvelope

POLICY = hashlib.sha256(b"coordinator").digest()
NOW = dt.datetime.now(dt.UTC)


async def _pair(
    snp: EmulatedSnpPlatform,
) -> tuple[CoordinatorIdentity, CoordinatorIdentity, EvidenceVerifier]:
    verifier = EvidenceVerifier()
    a = await CoordinatorIdentity.create(EmulatedSnp(snp, host_data=POLICY), verifier, NOW)
    b = await CoordinatorIdentity.create(EmulatedSnp(snp, host_data=POLICY), verifier, NOW)
    return a, b, verifier


async def test_envelope_round_trip(snp_emulator: EmulatedSnpPlatform) -> None:
    a, b, verifier = await _pair(snp_emulator)
    env = a.sign("join-reply", b"nonce-1", b"payload")
    payload, claims = open_envelope(
        env, purpose="join-reply", binding=b"nonce-1", verifier=verifier, own=b.own,
        allowed_policy_hashes=[POLICY], now=NOW,
    )  # fmt: skip
    assert payload == b"payload"
    assert claims.policy_hash == POLICY


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda e: msgspec.structs.replace(e, payload=b"other"), "auth.bad_signature"),
        (lambda e: msgspec.structs.replace(e, purpose="bundle"), "auth.wrong_purpose"),
        (lambda e: msgspec.structs.replace(e, signature=e.signature[:-1] + b"\x00"), "auth.bad_signature"),
    ],
    ids=["payload", "purpose", "signature"],
)
async def test_tampered_envelopes_are_refused(
    snp_emulator: EmulatedSnpPlatform, mutate: object, code: str
) -> None:
    a, b, verifier = await _pair(snp_emulator)
    env = mutate(a.sign("join-reply", b"n", b"payload"))  # type: ignore[operator]
    with pytest.raises(ContrastError) as e:
        open_envelope(
            env, purpose="join-reply", binding=b"n", verifier=verifier, own=b.own,
            allowed_policy_hashes=[POLICY], now=NOW,
        )  # fmt: skip
    assert e.value.code == code


async def test_replay_to_another_request_is_refused(snp_emulator: EmulatedSnpPlatform) -> None:
    a, b, verifier = await _pair(snp_emulator)
    env = a.sign("join-reply", b"request-1", b"payload")
    with pytest.raises(ContrastError) as e:
        open_envelope(
            env, purpose="join-reply", binding=b"request-2", verifier=verifier, own=b.own,
            allowed_policy_hashes=[POLICY], now=NOW,
        )  # fmt: skip
    assert e.value.code == "auth.bad_signature"


async def test_key_swap_is_refused(snp_emulator: EmulatedSnpPlatform) -> None:
    # An attacker re-signs with its own key but keeps a genuine statement: the statement binds another key.
    a, b, verifier = await _pair(snp_emulator)
    genuine = a.sign("x", b"n", b"payload")
    forged = b.sign("x", b"n", b"evil")
    swapped = SignedEnvelope(
        purpose="x", payload=b"evil", signature=forged.signature, statement=genuine.statement
    )
    with pytest.raises(ContrastError) as e:
        open_envelope(
            swapped, purpose="x", binding=b"n", verifier=verifier, own=b.own,
            allowed_policy_hashes=[POLICY], now=NOW,
        )  # fmt: skip
    assert e.value.code == "auth.bad_signature"


async def test_statement_with_swapped_keys_is_refused(snp_emulator: EmulatedSnpPlatform) -> None:
    # The evidence binds the original keys; a statement that names other keys fails the REPORT_DATA check.
    a, b, verifier = await _pair(snp_emulator)
    env = b.sign("x", b"n", b"payload")
    stmt = msgspec.structs.replace(a.statement, service_key=b.statement.service_key)
    with pytest.raises(ContrastError) as e:
        open_envelope(
            msgspec.structs.replace(env, statement=stmt), purpose="x", binding=b"n", verifier=verifier,
            own=b.own, allowed_policy_hashes=[POLICY], now=NOW,
        )  # fmt: skip
    assert e.value.code == "policy.report_data_mismatch"


def test_binding_is_length_prefixed() -> None:
    assert report_data(Label.MESH_CERT, b"ab", b"c") != report_data(Label.MESH_CERT, b"a", b"bc")
    assert report_data(Label.MESH_CERT, b"n", b"k") != report_data(Label.USER_API, b"n", b"k")
    assert len(report_data(Label.MESH_CERT, b"n")) == 64
