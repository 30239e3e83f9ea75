"""Fakes of the guest kernel's evidence interfaces, backed by the emulated AMD-SP and TDX module. Test-only.

- :class:`FakeTsmTree` is a configfs-tsm ``report`` tree that behaves as the kernel's
  (``drivers/virt/coco/tsm.c``, ``Documentation/ABI/testing/configfs-tsm``), served through
  :class:`contrast.platform.configfs_tsm.TsmFiles`: ``mkdir`` makes a report entry with ``inblob``
  (write-only, at most 64 bytes), ``outblob`` and ``auxblob`` (read-only; ``auxblob`` only for ``sev_guest``),
  ``provider``,
  ``generation`` (incremented by every write), ``privlevel`` (write-only, 0..3, not below ``privlevel_floor``)
  and ``privlevel_floor``. Reading ``outblob`` or ``auxblob`` generates the report once per write generation
  and serves it from the cache until the next write; an ``inblob`` of another length than 64 bytes fails the
  read with EINVAL; writing a read-only attribute is EACCES, reading a write-only one too. ``on_read`` lets a
  test play a concurrent writer between two reads.
- :class:`FakeSevGuestIoctl` replaces exactly ``fcntl.ioctl`` on ``/dev/sev-guest``: it reads the request
  through the pointers of ``struct snp_guest_request_ioctl`` from process memory and writes the response and
  the certificate table back there, with the kernel's EINVAL / EIO + SNP_GUEST_VMM_ERR_INVALID_LEN protocol.

Both sign with the emulator's VCEK (or TDX attestation key), and supply the host's certificate table only if
asked to (``host_certs``): otherwise the verifier's collateral provider must fetch the VCEK.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from contrast.evidence.snp.emulator import DEFAULT_MEASUREMENT, EmulatedSnpPlatform
from contrast.evidence.snp.kds import Product
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.platform import sev_guest
from contrast.platform.certtable import build_cert_table
from contrast.platform.emulated import TDX_DEFAULT_MRTD, TDX_DEFAULT_RTMRS

_INBLOB_MAX: Final = 64
_PRIVLEVEL_MAX: Final = 3


@dataclass
class SnpMachine:
    """An emulated SNP guest launched with ``host_data``: what the AMD-SP signs for it."""

    emulator: EmulatedSnpPlatform
    host_data: bytes
    product: Product = "Milan"
    measurement: bytes = DEFAULT_MEASUREMENT
    host_certs: bool = True  # whether the host hands out the VCEK/ASK/ARK table (GHCB extended request)
    _templates: dict[int, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, report_data: bytes, vmpl: int) -> bytes:
        with self._lock:
            template = self._templates.get(vmpl)
            if template is None:
                template = self.emulator.report(
                    host_data=self.host_data, measurement=self.measurement, product=self.product, vmpl=vmpl
                )
                self._templates[vmpl] = template
        return self.emulator.refill(template, report_data, self.product)

    def cert_table(self) -> bytes:
        if not self.host_certs:
            return b""
        vcek, ask, ark = self.emulator.cert_chain(self.product)
        return build_cert_table({"vcek": vcek, "ask": ask, "ark": ark})


@dataclass
class TdxMachine:
    """An emulated TD whose MR_CONFIG_ID carries ``policy_hash``: what the TDX module and QE sign for it."""

    emulator: EmulatedTdxPlatform
    policy_hash: bytes

    def quote(self, report_data: bytes) -> bytes:
        return self.emulator.quote(
            report_data=report_data,
            mr_config_id=self.policy_hash + bytes(16),
            mrtd=TDX_DEFAULT_MRTD,
            rtmrs=TDX_DEFAULT_RTMRS,
        )


@dataclass
class _Entry:
    inblob: bytes = b""
    privlevel: int = 0
    write_generation: int = 0
    read_generation: int = -1
    outblob: bytes = b""
    auxblob: bytes = b""


def _err(code: int, path: Path) -> OSError:
    import os

    return OSError(code, os.strerror(code), str(path))


class FakeTsmTree:
    """A configfs-tsm ``report`` directory at ``root`` (a path only: nothing touches the disk)."""

    def __init__(
        self,
        machine: SnpMachine | TdxMachine,
        root: Path = Path("/sys/kernel/config/tsm/report"),
        *,
        privlevel_floor: int = 0,
    ) -> None:
        self.machine, self.root, self.floor = machine, root, privlevel_floor
        self.provider = "sev_guest" if isinstance(machine, SnpMachine) else "tdx_guest"
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.reports_generated = 0
        self.on_read: Callable[[Path], None] | None = None

    def _attrs(self) -> dict[str, str]:
        attrs = {"inblob": "w", "outblob": "r", "provider": "r", "generation": "r"}
        if self.provider == "sev_guest":
            attrs |= {"auxblob": "r", "privlevel": "w", "privlevel_floor": "r"}
        return attrs

    def _locate(self, path: Path) -> tuple[_Entry, str]:
        if path.parent.parent != self.root or path.parent.name not in self._entries:
            raise _err(errno.ENOENT, path)
        attr = path.name
        if attr not in self._attrs():
            raise _err(errno.ENOENT, path)
        return self._entries[path.parent.name], attr

    # --- TsmFiles -------------------------------------------------------------------------------------

    def is_dir(self, path: Path) -> bool:
        return path == self.root or (path.parent == self.root and path.name in self._entries)

    def exists(self, path: Path) -> bool:
        if self.is_dir(path):
            return True
        try:
            self._locate(path)
        except OSError:
            return False
        return True

    def mkdir(self, path: Path) -> None:
        with self._lock:
            if path.parent != self.root:
                raise _err(errno.EPERM, path)
            if path.name in self._entries:
                raise _err(errno.EEXIST, path)
            self._entries[path.name] = _Entry()

    def rmdir(self, path: Path) -> None:
        with self._lock:
            if path.parent != self.root or path.name not in self._entries:
                raise _err(errno.ENOENT, path)
            del self._entries[path.name]

    def write(self, path: Path, data: bytes) -> None:
        with self._lock:
            entry, attr = self._locate(path)
            if self._attrs()[attr] != "w":
                raise _err(errno.EACCES, path)
            if attr == "inblob":
                if len(data) > _INBLOB_MAX:
                    raise _err(errno.EINVAL, path)
                entry.inblob = bytes(data)
            else:
                try:
                    level = int(data.decode().strip())
                except ValueError:
                    raise _err(errno.EINVAL, path) from None
                if not self.floor <= level <= _PRIVLEVEL_MAX:
                    raise _err(errno.EINVAL, path)
                entry.privlevel = level
            entry.write_generation += 1

    def read(self, path: Path, limit: int) -> bytes:
        if self.on_read is not None:
            self.on_read(path)
        with self._lock:
            entry, attr = self._locate(path)
            if self._attrs()[attr] != "r":
                raise _err(errno.EACCES, path)
            if attr == "provider":
                return f"{self.provider}\n".encode()
            if attr == "generation":
                return f"{entry.write_generation}\n".encode()
            if attr == "privlevel_floor":
                return f"{self.floor}\n".encode()
            if entry.read_generation != entry.write_generation:
                self._generate(entry, path)
            blob = entry.outblob if attr == "outblob" else entry.auxblob
        return blob[:limit]

    def _generate(self, entry: _Entry, path: Path) -> None:
        if len(entry.inblob) != _INBLOB_MAX:
            raise _err(errno.EINVAL, path)
        if isinstance(self.machine, SnpMachine):
            entry.outblob = self.machine.report(entry.inblob, entry.privlevel)
            entry.auxblob = self.machine.cert_table()
        else:
            entry.outblob = self.machine.quote(entry.inblob)
        entry.read_generation = entry.write_generation
        self.reports_generated += 1


class FakeSevGuestIoctl:
    """``fcntl.ioctl`` as ``/dev/sev-guest`` answers it, for ``SevGuestDevice``."""

    def __init__(self, machine: SnpMachine) -> None:
        self.machine = machine
        self.calls: list[int] = []

    def __call__(self, fd: int, request: int, arg: bytearray, mutate: bool = True) -> int:
        import os

        os.fstat(fd)  # a closed or bogus descriptor fails as it would in the kernel (EBADF)
        self.calls.append(request)
        if request not in (sev_guest.SNP_GET_REPORT, sev_guest.SNP_GET_EXT_REPORT):
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        version, req_addr, resp_addr, _ = struct.unpack_from("<B7xQQQ", arg, 0)
        if version != sev_guest.MSG_VERSION or not req_addr or not resp_addr:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        ext = request == sev_guest.SNP_GET_EXT_REPORT
        size = sev_guest.EXT_REQ_SIZE if ext else sev_guest.REQ_SIZE
        req = ctypes.string_at(req_addr, size)
        user_data, vmpl = req[:64], struct.unpack_from("<I", req, 64)[0]
        table = b""
        if ext:
            certs_addr, certs_len = struct.unpack_from("<QI", req, sev_guest.REQ_SIZE)
            if certs_addr and certs_len:
                if certs_len > sev_guest.CERTS_MAX or certs_len % sev_guest.PAGE_SIZE:
                    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
                table = self.machine.cert_table()
                needed = -(-len(table) // sev_guest.PAGE_SIZE) * sev_guest.PAGE_SIZE
                if needed > certs_len:
                    struct.pack_into("<I", arg, 28, sev_guest.VMM_ERR_INVALID_LEN)
                    ctypes.memmove(req_addr + sev_guest.REQ_SIZE + 8, struct.pack("<I", needed), 4)
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
        if vmpl > _PRIVLEVEL_MAX:
            resp = struct.pack("<II24x", 0x16, 0)  # INVALID_PARAM from the firmware
        else:
            resp = struct.pack("<II24x", 0, sev_guest.REPORT_SIZE) + self.machine.report(user_data, vmpl)
        ctypes.memmove(resp_addr, resp.ljust(sev_guest.RESP_SIZE, b"\0"), sev_guest.RESP_SIZE)
        if ext and table:
            certs_addr, certs_len = struct.unpack_from("<QI", req, sev_guest.REQ_SIZE)
            ctypes.memmove(certs_addr, table.ljust(certs_len, b"\0"), certs_len)
        struct.pack_into("<Q", arg, 24, 0)
        return 0
