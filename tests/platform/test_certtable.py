from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contrast.errors import EvidenceError
from contrast.platform.certtable import ENTRY_SIZE, build_cert_table, parse_cert_table


def test_round_trip() -> None:
    certs = {"vcek": b"V" * 100, "ask": b"A" * 50, "ark": b"R" * 70}
    assert parse_cert_table(build_cert_table(certs)) == certs


def test_unknown_guids_are_ignored() -> None:
    table = build_cert_table({"vcek": b"V"})
    # Put an unknown GUID in front, pointing at the same bytes: it is skipped, not an error.
    unknown = struct.pack("<16sII", b"\x01" * 16, ENTRY_SIZE * 3, 1)
    shifted = build_cert_table({"vcek": b"V"})[:ENTRY_SIZE]
    guid, _, length = struct.unpack_from("<16sII", shifted)
    blob = unknown + struct.pack("<16sII", guid, ENTRY_SIZE * 3, length) + bytes(ENTRY_SIZE) + b"V"
    assert parse_cert_table(blob) == {"vcek": b"V"}
    assert table


@pytest.mark.parametrize(
    "blob",
    [
        b"",  # no terminator
        b"\x00" * 10,  # short
        struct.pack("<16sII", bytes.fromhex("63da758de6644564adc5f4b93be8accd"), 48, 1000) + bytes(24),
        struct.pack("<16sII", bytes.fromhex("63da758de6644564adc5f4b93be8accd"), 0, 1) + bytes(24),
    ],
    ids=["empty", "short", "overrun", "offset-inside-header"],
)
def test_malformed_tables_are_typed_errors(blob: bytes) -> None:
    with pytest.raises(EvidenceError) as e:
        parse_cert_table(blob)
    assert e.value.code == "evidence.malformed"


def test_duplicate_entry_rejected() -> None:
    guid = bytes.fromhex("63da758de6644564adc5f4b93be8accd")
    blob = struct.pack("<16sII", guid, 72, 1) + struct.pack("<16sII", guid, 72, 1) + bytes(24) + b"X"
    with pytest.raises(EvidenceError):
        parse_cert_table(blob)


@given(st.binary(max_size=400))
def test_random_bytes_never_crash(blob: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        parse_cert_table(blob)
