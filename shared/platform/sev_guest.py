"""Evidence through the ``/dev/sev-guest`` SNP_GET_EXT_REPORT ioctl, for guest kernels without configfs-tsm.

Layouts from the Linux UAPI header ``include/uapi/linux/sev-guest.h``:

- ``struct snp_report_req { u8 user_data[64]; u32 vmpl; u8 rsvd[28]; }`` (96 bytes)
- ``struct snp_ext_report_req { struct snp_report_req data; u64 certs_address; u32 certs_len; }`` (112 bytes
  with alignment): the host's certificate table (the GHCB extended guest request) is written to
  ``certs_address``; ``certs_len`` must be a multiple of the page size and at most 16 KiB
  (SEV_FW_BLOB_MAX_SIZE). We offer one page; if the table does not fit, the ioctl fails with EIO,
  ``exitinfo2`` carries SNP_GUEST_VMM_ERR_INVALID_LEN in its upper half and ``certs_len`` is set to the size
  needed: we retry once with that.
- ``struct snp_report_resp { u8 data[4000]; }``, holding the firmware's MSG_REPORT_RSP:
  ``u32 status; u32 report_size; u8 reserved[24]; u8 report[report_size]``
- ``struct snp_guest_request_ioctl { u8 msg_version; u64 req_data; u64 resp_data; u64 exitinfo2; }`` (32 bytes
  with alignment; ``exitinfo2`` is ``{u32 fw_error; u32 vmm_error}``),
  ``SNP_GET_EXT_REPORT = _IOWR('S', 0x2, struct snp_guest_request_ioctl)``.

The certificates (VCEK/VLEK, ASK, ARK) go into the evidence as the host supplied them (untrusted: the verifier
checks each); a host that supplies none leaves the VCEK to the collateral provider. The ioctl is injected
(``ioctl``, default :func:`fcntl.ioctl`): tests replace exactly that call, nothing above it.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Final

from contrast.errors import EvidenceError
from contrast.evidence.result import Tee
from contrast.evidence.verifier import Evidence
from contrast.platform.base import check_report_data
from contrast.platform.certtable import parse_cert_table

DEFAULT_DEVICE: Final = Path("/dev/sev-guest")
REQ_SIZE: Final = 96
EXT_REQ_SIZE: Final = 112
RESP_SIZE: Final = 4000
IOCTL_SIZE: Final = 32
PAGE_SIZE: Final = 4096
CERTS_MAX: Final = 0x4000  # SEV_FW_BLOB_MAX_SIZE
VMM_ERR_INVALID_LEN: Final = 1
VMM_ERR_BUSY: Final = 2
_IOC_WRITE_READ: Final = 3

Ioctl = Callable[[int, int, bytearray, bool], object]


def _iowr(kind: str, nr: int, size: int) -> int:
    return (_IOC_WRITE_READ << 30) | (size << 16) | (ord(kind) << 8) | nr


SNP_GET_REPORT: Final = _iowr("S", 0x0, IOCTL_SIZE)  # 0xC0205300
SNP_GET_EXT_REPORT: Final = _iowr("S", 0x2, IOCTL_SIZE)  # 0xC0205302
MSG_VERSION: Final = 1
REPORT_SIZE: Final = 0x4A0


def pack_request(report_data: bytes, vmpl: int) -> bytes:
    return struct.pack("<64sI28x", report_data, vmpl)


def pack_ext_request(report_data: bytes, vmpl: int, certs_address: int, certs_len: int) -> bytes:
    return pack_request(report_data, vmpl) + struct.pack("<QI4x", certs_address, certs_len)


def pack_ioctl(req_address: int, resp_address: int) -> bytearray:
    return bytearray(struct.pack("<B7xQQQ", MSG_VERSION, req_address, resp_address, 0))


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

    def __init__(self, device: Path = DEFAULT_DEVICE, *, vmpl: int = 0, ioctl: Ioctl = fcntl.ioctl) -> None:
        self._device = device
        self._vmpl = vmpl
        self._ioctl = ioctl

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
        report, table = await asyncio.to_thread(self._get_ext_report, check_report_data(report_data))
        certs = parse_cert_table(table)
        return Evidence(
            tee="snp", report=report, certs=[certs[n] for n in ("vcek", "vlek", "ask", "ark") if n in certs]
        )

    def _get_ext_report(self, report_data: bytes) -> tuple[bytes, bytes]:
        fd = os.open(self._device, os.O_RDWR)
        try:
            certs_len = PAGE_SIZE  # the host says what its table needs (a VCEK chain: two pages)
            for attempt in range(2):
                certs = ctypes.create_string_buffer(certs_len)
                req = ctypes.create_string_buffer(
                    pack_ext_request(report_data, self._vmpl, ctypes.addressof(certs), certs_len),
                    EXT_REQ_SIZE,
                )
                resp = ctypes.create_string_buffer(RESP_SIZE)
                arg = pack_ioctl(ctypes.addressof(req), ctypes.addressof(resp))
                try:
                    self._ioctl(fd, SNP_GET_EXT_REPORT, arg, True)
                except OSError as e:
                    vmm_error = struct.unpack_from("<I", arg, 28)[0]
                    needed = struct.unpack_from("<I", req.raw, REQ_SIZE + 8)[0]
                    if e.errno == errno.EIO and vmm_error == VMM_ERR_INVALID_LEN and attempt == 0:
                        if needed <= certs_len or needed > CERTS_MAX or needed % PAGE_SIZE:
                            raise EvidenceError(
                                "platform_error", f"the host's certificate table needs {needed} bytes"
                            ) from e
                        certs_len = needed
                        continue
                    exitinfo2 = struct.unpack_from("<Q", arg, 24)[0]
                    detail = f"SNP_GET_EXT_REPORT failed: {e} (exitinfo2 0x{exitinfo2:x})"
                    raise EvidenceError("platform_error", detail) from e
                return parse_response(resp.raw), certs.raw
        finally:
            os.close(fd)
        raise EvidenceError(
            "platform_error", "SNP_GET_EXT_REPORT kept asking for a larger certificate buffer"
        )
