"""Property tests for the SNP parser and verifier: random and mutated reports (and certificates) end in a
typed error or a result, never another exception.

Short by default; ``-m slow`` runs longer; the >= 1,000,000-input campaign is ``bench/fuzz_snp.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contrast.errors import ContrastError
from contrast.evidence.snp import abi
from contrast.testing.snp_fuzz import VECTOR_TIME as TARGET_TIME
from contrast.testing.snp_fuzz import SnpFuzzTarget

TARGET = SnpFuzzTarget(Path(__file__).resolve().parents[1] / "data" / "vectors")
BASES = TARGET.real_reports + TARGET.builder_reports
FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
SLOW = settings(max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)

# Offsets where a structured value matters most: header words, bit fields, TCBs, CPUID, CHIP_ID, signature.
HOT = [0x000, 0x008, 0x030, 0x034, 0x038, 0x040, 0x048, 0x04C, 0x180, 0x188, 0x189, 0x18A, 0x1A0, 0x1A8,
       0x1E0, 0x1EB, 0x1F0, 0x1F8, 0x200, 0x208, 0x2A0, 0x2CF, 0x2E8, 0x330]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    b = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "word", "cut", "extend"]))
        i = draw(st.sampled_from(HOT) | st.integers(0, max(len(b) - 1, 0)))
        if op == "flip" and i < len(b):
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and i < len(b):
            b[i] = draw(st.integers(0, 255))
        elif op == "word" and i + 8 <= len(b):
            b[i : i + 8] = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
        elif op == "cut":
            del b[i:]
        elif op == "extend":
            b += draw(st.binary(max_size=64))
    return bytes(b)


any_bytes = st.binary(min_size=0, max_size=abi.REPORT_SIZE + 64) | st.binary(
    min_size=abi.REPORT_SIZE, max_size=abi.REPORT_SIZE
)


def _check_parse(data: bytes) -> None:
    TARGET.parse(data)


def _check_real(data: bytes, which: int) -> None:
    TARGET.real(data, which)


def _check_resigned(data: bytes) -> None:
    TARGET.resigned(data)


@FAST
@given(any_bytes | mutated())
def test_parser_raises_only_typed_errors(data: bytes) -> None:
    _check_parse(data)


@FAST
@given(mutated(), st.integers(0, 7))
def test_verifier_raises_only_typed_errors(data: bytes, which: int) -> None:
    _check_real(data, which)


@FAST
@given(mutated())
def test_resigned_mutations_raise_only_typed_errors(data: bytes) -> None:
    _check_resigned(data)


def test_round_trip_of_every_parsable_mutation() -> None:
    # Whatever parses must re-serialise to exactly the bytes it came from.
    @FAST
    @given(mutated())
    def prop(data: bytes) -> None:
        try:
            report = abi.parse_report(data)
        except ContrastError:
            return
        assert report.to_bytes() == data

    prop()


@pytest.mark.slow
@SLOW
@given(any_bytes | mutated(), st.integers(0, 7))
def test_long_campaign(data: bytes, which: int) -> None:
    _check_parse(data)
    _check_real(data, which)
    _check_resigned(data)


CERTS = TARGET.chain.der()


@st.composite
def mutated_certs(draw: st.DrawFn) -> list[bytes]:
    certs = [bytearray(c) for c in CERTS]
    for _ in range(draw(st.integers(1, 4))):
        c = certs[draw(st.integers(0, len(certs) - 1))]
        i = draw(st.integers(0, len(c) - 1))
        if draw(st.booleans()):
            c[i] ^= 1 << draw(st.integers(0, 7))
        else:
            c[i] = draw(st.integers(0, 255))
    return [bytes(c) for c in certs]


@FAST
@given(mutated_certs())
def test_mutated_certificates_raise_only_typed_errors(certs: list[bytes]) -> None:
    TARGET.certs(certs)


CRL = TARGET.chain.crl([1, 2, 3], last=TARGET_TIME)


@FAST
@given(st.lists(st.tuples(st.integers(0, len(CRL) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_crls_raise_only_typed_errors(patches: list[tuple[int, int]]) -> None:
    b = bytearray(CRL)
    for i, v in patches:
        b[i] = v
    TARGET.crl(bytes(b))


def test_unmutated_crl_is_accepted() -> None:
    before = TARGET.accepted
    TARGET.crl(CRL)
    assert TARGET.accepted == before + 1
