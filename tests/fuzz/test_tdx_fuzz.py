"""Fuzzing the TDX verifier: any mutation of quote or collateral ends in a typed error or a verified result.

The default run is short; ``-m slow`` runs the long campaign.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contrast.errors import ContrastError
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform, _rs
from contrast.evidence.tdx.pcs import split_signed_document
from contrast.evidence.tdx.trust import TdxRoots
from contrast.evidence.tdx.verify import COLLATERAL_FILES, TdxCollateral, TdxVerifier

VECTOR = Path(__file__).resolve().parents[1] / "data" / "vectors" / "tdx_v4_gotdxguest_spr"
REAL_NOW = dt.datetime(2023, 7, 1, tzinfo=dt.UTC)
EMU_NOW = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
REAL_QUOTE = (VECTOR / "quote.bin").read_bytes()
REAL_COLLATERAL = TdxCollateral(**{k: (VECTOR / v).read_bytes() for k, v in COLLATERAL_FILES.items()})
INTEL = TdxVerifier(TdxRoots.intel())
PLATFORM = EmulatedTdxPlatform.create(now=EMU_NOW - dt.timedelta(days=2))
EMU = TdxVerifier(TdxRoots.emulated(PLATFORM.root_fingerprint))
EMU_QUOTES = [PLATFORM.quote(version=4), PLATFORM.quote(version=5, body_type=3)]
EMU_COLLATERAL = PLATFORM.collateral(issued=EMU_NOW - dt.timedelta(days=1))


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    b = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        i = draw(st.integers(0, max(len(b) - 1, 0)))
        if op == "flip" and b:
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and b:
            b[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del b[i : i + draw(st.integers(1, 16))]
    return bytes(b)


def _run(verifier: TdxVerifier, quote: bytes, collateral: TdxCollateral | None, now: dt.datetime) -> None:
    with contextlib.suppress(ContrastError):
        verifier.verify(quote, collateral=collateral, now=now, authenticity_only=collateral is None)


SHORT = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=5_000, deadline=None, suppress_health_check=list(HealthCheck))


@SHORT
@given(mutated(REAL_QUOTE))
def test_real_quote_mutations(quote: bytes) -> None:
    _run(INTEL, quote, REAL_COLLATERAL, REAL_NOW)


@SHORT
@given(st.sampled_from(EMU_QUOTES).flatmap(mutated))
def test_emulated_quote_mutations(quote: bytes) -> None:
    _run(EMU, quote, EMU_COLLATERAL, EMU_NOW)


@SHORT
@given(st.sampled_from(sorted(COLLATERAL_FILES)), st.data())
def test_collateral_mutations(field: str, data: st.DataObject) -> None:
    value = data.draw(mutated(getattr(EMU_COLLATERAL, field)))
    fields = {f: getattr(EMU_COLLATERAL, f) for f in COLLATERAL_FILES} | {field: value}
    _run(TdxVerifier(EMU.roots), EMU_QUOTES[0], TdxCollateral(**fields), EMU_NOW)  # a cold verifier


@pytest.mark.slow
@pytest.mark.timeout(3600)
@LONG
@given(st.one_of(mutated(REAL_QUOTE), st.binary(max_size=6000)))
def test_long_campaign_real(quote: bytes) -> None:
    _run(INTEL, quote, REAL_COLLATERAL, REAL_NOW)
    _run(INTEL, quote, None, REAL_NOW)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@LONG
@given(st.sampled_from(EMU_QUOTES).flatmap(mutated), st.sampled_from(sorted(COLLATERAL_FILES)), st.data())
def test_long_campaign_emulated(quote: bytes, field: str, data: st.DataObject) -> None:
    _run(EMU, quote, EMU_COLLATERAL, EMU_NOW)
    value = data.draw(mutated(getattr(EMU_COLLATERAL, field)))
    fields = {f: getattr(EMU_COLLATERAL, f) for f in COLLATERAL_FILES} | {field: value}
    _run(EMU, EMU_QUOTES[0], TdxCollateral(**fields), EMU_NOW)


@SHORT
@given(st.sampled_from(["tcbInfo", "enclaveIdentity"]), st.data())
def test_signed_but_malformed_documents(key: str, data: st.DataObject) -> None:
    # Behind a valid signature (the emulator's TCB-signing key re-signs the mutated bytes) the decoders
    # still meet arbitrary JSON: they must refuse it with a typed error, never crash.
    field = "tcb_info" if key == "tcbInfo" else "qe_identity"
    inner, _ = split_signed_document(getattr(EMU_COLLATERAL, field), key)
    mutated_inner = data.draw(mutated(inner))
    sig = _rs(PLATFORM.tcb_signing_key, mutated_inner)
    doc = b'{"' + key.encode() + b'":' + mutated_inner + b',"signature":"' + sig.hex().encode() + b'"}'
    fields = {f: getattr(EMU_COLLATERAL, f) for f in COLLATERAL_FILES} | {field: doc}
    _run(EMU, EMU_QUOTES[0], TdxCollateral(**fields), EMU_NOW)
