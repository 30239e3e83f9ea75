from __future__ import annotations

import struct

import pytest

from contrast.errors import EvidenceError
from contrast.platform import sev_guest


def test_ioctl_number_matches_linux_uapi() -> None:
    # _IOWR('S', 0x0, struct snp_guest_request_ioctl) with sizeof == 32, as the kernel defines it.
    assert sev_guest.SNP_GET_REPORT == 0xC0205300


def test_request_layout() -> None:
    req = sev_guest.pack_request(b"\xaa" * 64, 1)
    assert len(req) == sev_guest.REQ_SIZE
    assert req[:64] == b"\xaa" * 64
    assert struct.unpack_from("<I", req, 64)[0] == 1
    assert req[68:] == bytes(28)


def test_response_parsing() -> None:
    report = bytes(range(256)) * 4 + bytes(0x4A0 - 1024)
    resp = struct.pack("<II24x", 0, 0x4A0) + report + bytes(4000 - 32 - 0x4A0)
    assert sev_guest.parse_response(resp) == report


@pytest.mark.parametrize(
    ("status", "size"), [(0x16, 0x4A0), (0, 0x100), (0, 4000)], ids=["fw-error", "short", "overrun"]
)
def test_bad_responses_are_typed(status: int, size: int) -> None:
    resp = struct.pack("<II24x", status, size) + bytes(4000 - 32)
    with pytest.raises(EvidenceError) as e:
        sev_guest.parse_response(resp)
    assert e.value.code == "evidence.platform_error"


async def test_missing_device_fails_closed(tmp_path: object) -> None:
    from pathlib import Path

    dev = sev_guest.SevGuestDevice(Path("/nonexistent/sev-guest"))
    with pytest.raises(OSError):
        await dev.evidence(bytes(64))
