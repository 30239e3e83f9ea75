"""Quote parsing by declared lengths: the real vector field by field, round trips, and every malformation."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contrast.errors import EvidenceError
from contrast.evidence.tdx import abi
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from tests.evidence.tdx.tdx_helpers import emu_quote


def test_real_quote_fields_match_the_reference_decoder(real_quote: bytes, expected: dict[str, Any]) -> None:
    q = abi.parse_quote(real_quote)
    dec, td = expected["decoded"], expected["decoded"]["td_report"]
    assert q.version == 4
    assert q.body_type == abi.BODY_TYPE_TDX10
    assert q.header.user_data.hex() == dec["header"]["user_data"]
    for name in (
        "tee_tcb_svn",
        "mr_seam",
        "mr_signer_seam",
        "seam_attributes",
        "td_attributes",
        "xfam",
        "mr_td",
    ):
        assert getattr(q.body, name).hex() == td[name], name
    for name in ("mr_config_id", "mr_owner", "mr_owner_config", "report_data"):
        assert getattr(q.body, name).hex() == td[name], name
    assert [r.hex() for r in q.body.rtmrs] == [td[f"rtmr{i}"] for i in range(4)]
    sd = q.signature_data
    assert sd.signature.hex() == dec["quote_signature"]
    assert sd.attestation_key.hex() == dec["attestation_public_key"]
    qe = sd.cert_data.qe_report
    assert qe.mr_signer.hex() == dec["qe_report"]["mr_signer"]
    assert qe.isv_prod_id == 2
    assert qe.isv_svn == dec["qe_report"]["isv_svn"]
    assert qe.report_data.hex() == dec["qe_report"]["report_data"]
    assert sd.cert_data.qe_auth_data.hex() == dec["qe_auth_data"]
    assert sd.cert_data.qe_report_signature.hex() == dec["qe_report_signature"]
    assert q.trailing == dec["trailing_bytes"] == 39
    assert not q.body.debug


def test_round_trip_is_byte_exact_without_trailing_bytes(real_quote: bytes) -> None:
    q = abi.parse_quote(real_quote)
    assert q.to_bytes() == real_quote[: len(real_quote) - q.trailing]
    assert abi.parse_quote(q.to_bytes()).trailing == 0


@pytest.mark.parametrize(("version", "body_type", "signed_len"), [(4, 2, 632), (5, 2, 638), (5, 3, 702)])
def test_emulated_quotes_round_trip(
    platform: EmulatedTdxPlatform, version: int, body_type: int, signed_len: int
) -> None:
    raw = emu_quote(platform, version=version, body_type=body_type, trailing=b"\x00" * 70)
    q = abi.parse_quote(raw)
    assert q.version == version
    assert q.body_type == body_type
    assert len(q.signed_region) == signed_len
    assert q.to_bytes() + b"\x00" * 70 == raw
    assert q.body.is_tdx15 == (body_type == 3)
    assert q.signature_data.cert_data.pck_chain_raw.endswith(b"\x00")
    assert not q.signature_data.cert_data.pck_chain_pem.endswith(b"\x00")


def test_every_truncation_is_a_typed_error(real_quote: bytes) -> None:
    end = len(real_quote) - 39
    for n in range(end):
        with pytest.raises(EvidenceError) as e:
            abi.parse_quote(real_quote[:n])
        assert e.value.code in ("evidence.malformed", "evidence.unsupported_version"), n


def _set(buf: bytes, off: int, fmt: str, value: int) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


SD = 636  # v4 signature data offset
CD = SD + 134  # certification data offset


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "code"),
    [
        (632, "<I", 0xFFFFFFFF, "evidence.malformed"),  # signature_data_len overruns
        (632, "<I", 100, "evidence.malformed"),  # shorter than the fixed part
        (SD + 130, "<I", 0x7FFFFFFF, "evidence.malformed"),  # certification data size overruns
        (CD + 448, "<H", 0xFFFF, "evidence.malformed"),  # QE auth data size overruns
        (CD + 450 + 32 + 2, "<I", 0xFFFFFFFF, "evidence.malformed"),  # PCK chain size overruns
        (CD + 450 + 32 + 2, "<I", 10, "evidence.malformed"),  # PCK chain size leaves bytes behind
        (0, "<H", 3, "evidence.unsupported_version"),
        (0, "<H", 6, "evidence.unsupported_version"),
        (2, "<H", 3, "evidence.unsupported_format"),  # P-384 attestation key
        (4, "<I", 0, "evidence.unsupported_format"),  # SGX quote
        (SD + 128, "<H", 5, "evidence.unsupported_format"),  # certification data not type 6
        (CD + 450 + 32, "<H", 4, "evidence.unsupported_format"),  # inner type not 5
    ],
)
def test_bad_lengths_and_types_are_typed_errors(
    real_quote: bytes, offset: int, fmt: str, value: int, code: str
) -> None:
    with pytest.raises(EvidenceError) as e:
        abi.parse_quote(_set(real_quote, offset, fmt, value))
    assert e.value.code == code


def test_wrong_qe_vendor_is_refused(real_quote: bytes) -> None:
    b = bytearray(real_quote)
    b[abi.OFF_QE_VENDOR_ID] ^= 1
    with pytest.raises(EvidenceError) as e:
        abi.parse_quote(bytes(b))
    assert e.value.code == "evidence.unsupported_format"


@pytest.mark.parametrize(
    ("body_type", "size", "code"),
    [
        (1, 384, "unsupported_format"),
        (4, 648, "unsupported_format"),
        (3, 584, "malformed"),
        (2, 648, "malformed"),
    ],
)
def test_v5_body_descriptor_is_checked(
    platform: EmulatedTdxPlatform, body_type: int, size: int, code: str
) -> None:
    raw = emu_quote(platform, version=5, body_type=3)
    raw = raw[:48] + struct.pack("<HI", body_type, size) + raw[54:]
    with pytest.raises(EvidenceError) as e:
        abi.parse_quote(raw)
    assert e.value.code == f"evidence.{code}"


def test_looks_like_tdx_quote(real_quote: bytes) -> None:
    assert abi.looks_like_tdx_quote(real_quote)
    assert not abi.looks_like_tdx_quote(b"\x02\x00\x00\x00" + bytes(1180))
    assert not abi.looks_like_tdx_quote(real_quote[:10])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        abi.parse_quote(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_real_quote_parses_or_fails_typed(real_quote: bytes, data: st.DataObject) -> None:
    b = bytearray(real_quote)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    try:
        q = abi.parse_quote(bytes(b[:cut]))
    except EvidenceError:
        return
    assert q.to_bytes() == bytes(b[: cut - q.trailing])
