"""Evidence through the ``/dev/sev-guest`` SNP_GET_REPORT ioctl, for guest kernels without configfs-tsm.

Layouts from the Linux UAPI header ``include/uapi/linux/sev-guest.h``:

- ``struct snp_report_req { u8 user_data[64]; u32 vmpl; u8 rsvd[28]; }`` (96 bytes)
- ``struct snp_report_resp { u8 data[4000]; }``, holding the firmware's MSG_REPORT_RSP:
  ``u32 status; u32 report_size; u8 reserved[24]; u8 report[report_size]``
- ``struct snp_guest_request_ioctl { u8 msg_version; u64 req_data; u64 resp_data; u64 exitinfo2; }`` (32 bytes
  with alignment), ``SNP_GET_REPORT = _IOWR('S', 0x0, struct snp_guest_request_ioctl)``.

This path returns no certificates; the verifier's collateral provider then fetches the VCEK.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import struct
from pathlib import Path
from typing import Final

from contrast.errors import EvidenceError
from contrast.evidence.result import Tee
from contrast.evidence.verifier import Evidence
from contrast.platform.base import check_report_data

DEFAULT_DEVICE: Final = Path("/dev/sev-guest")
REQ_SIZE: Final = 96
RESP_SIZE: Final = 4000
IOCTL_SIZE: Final = 32
_IOC_WRITE_READ: Final = 3


def _iowr(kind: str, nr: int, size: int) -> int:
    return (_IOC_WRITE_READ << 30) | (size << 16) | (ord(kind) << 8) | nr


SNP_GET_REPORT: Final = _iowr("S", 0x0, IOCTL_SIZE)  # 0xC0205300
MSG_VERSION: Final = 1
REPORT_SIZE: Final = 0x4A0


def pack_request(report_data: bytes, vmpl: int) -> bytes:
    return struct.pack("<64sI28x", report_data, vmpl)


def parse_response(resp: bytes) -> bytes:
    """The report inside a MSG_REPORT_RSP, or ``evidence.platform_error`` with the firmware status."""
    status, size = struct.unpack_from("<II", resp, 0)
    if status != 0:
        raise EvidenceError("platform_error", f"SNP firmware returned status 0x{status:x}")
    if size != REPORT_SIZE or 32 + size > len(resp):
        raise EvidenceError("platform_error", f"SNP firmware returned a report of {size} bytes")
    return bytes(resp[32 : 32 + size])


class SevGuestDevice:
    """A real SNP guest reached through ``/dev/sev-guest``."""

    def __init__(self, device: Path = DEFAULT_DEVICE, *, vmpl: int = 0) -> None:
        self._device = device
        self._vmpl = vmpl

    @classmethod
    def available(cls, device: Path = DEFAULT_DEVICE) -> bool:
        return device.exists()

    @property
    def tee(self) -> Tee:
        return "snp"

    @property
    def name(self) -> str:
        return f"sev-guest ({self._device})"

    @property
    def emulator_root(self) -> str | None:
        return None

    async def evidence(self, report_data: bytes) -> Evidence:
        report = await asyncio.to_thread(self._get_report, check_report_data(report_data))
        return Evidence(tee="snp", report=report)

    def _get_report(self, report_data: bytes) -> bytes:
        req = ctypes.create_string_buffer(pack_request(report_data, self._vmpl), REQ_SIZE)
        resp = ctypes.create_string_buffer(RESP_SIZE)
        arg = bytearray(struct.pack("<B7xQQQ", MSG_VERSION, ctypes.addressof(req), ctypes.addressof(resp), 0))
        fd = os.open(self._device, os.O_RDWR)
        try:
            fcntl.ioctl(fd, SNP_GET_REPORT, arg, True)
        except OSError as e:
            exitinfo2 = struct.unpack_from("<Q", arg, 24)[0]
            detail = f"SNP_GET_REPORT failed: {e} (exitinfo2 0x{exitinfo2:x})"
            raise EvidenceError("platform_error", detail) from e
        finally:
            os.close(fd)
        return parse_response(resp.raw)
