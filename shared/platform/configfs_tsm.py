"""Evidence through the Linux configfs-tsm report interface (``/sys/kernel/config/tsm/report``).

Protocol (kernel ``Documentation/ABI/testing/configfs-tsm``): make a fresh report directory, read its
``provider`` (``sev_guest`` or ``tdx_guest``) and ``generation``, write ``privlevel`` (SNP, optional) and the
64 bytes of REPORT_DATA to ``inblob``, read ``outblob`` and, for SNP, ``auxblob`` (the host's certificate
table, possibly empty), then read ``generation`` again: it must have advanced by exactly our writes, or
another writer changed the entry between our write and our reads (``evidence.platform_race``). The directory
is removed afterwards.

The file operations go through :class:`TsmFiles` (production: :class:`OsFiles`, plain system calls run in a
worker thread, off the event loop), so that tests can put a tree that behaves as the kernel's in their place.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Final, Protocol

from contrast.errors import EvidenceError
from contrast.evidence.result import Tee
from contrast.evidence.verifier import Evidence
from contrast.platform.base import check_report_data
from contrast.platform.certtable import parse_cert_table

DEFAULT_ROOT: Final = Path("/sys/kernel/config/tsm/report")
_PROVIDERS: Final[dict[str, Tee]] = {"sev_guest": "snp", "tdx_guest": "tdx"}
_MAX_BLOB: Final = 64 * 1024  # TSM_OUTBLOB_MAX is 32 KiB; the certificate table stays below 64 KiB


class TsmFiles(Protocol):
    """The system calls configfs-tsm is used through."""

    def is_dir(self, path: Path) -> bool: ...

    def exists(self, path: Path) -> bool: ...

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def read(self, path: Path, limit: int) -> bytes: ...

    def write(self, path: Path, data: bytes) -> None: ...


class OsFiles:
    """The real file system: a configfs attribute is written in one ``write``, never created or truncated."""

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def exists(self, path: Path) -> bool:
        return path.exists()

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path, limit: int) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks: list[bytes] = []
            size = 0
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise EvidenceError("platform_error", f"{path.name} exceeds {limit} bytes")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            if os.write(fd, data) != len(data):
                raise EvidenceError("platform_error", f"short write to {path.name}")
        finally:
            os.close(fd)


class ConfigfsTsm:
    """A real SNP or TDX guest reached through configfs-tsm."""

    def __init__(
        self, root: Path = DEFAULT_ROOT, *, vmpl: int | None = None, files: TsmFiles | None = None
    ) -> None:
        self._root = root
        self._vmpl = vmpl
        self._files: TsmFiles = files or OsFiles()
        self._tee: Tee | None = None
        self._provider = ""

    @classmethod
    def available(cls, root: Path = DEFAULT_ROOT, files: TsmFiles | None = None) -> bool:
        return (files or OsFiles()).is_dir(root)

    @property
    def tee(self) -> Tee:
        if self._tee is None:
            raise RuntimeError("call evidence() once (or probe()) before reading tee")
        return self._tee

    @property
    def name(self) -> str:
        return f"configfs-tsm ({self._provider or 'unprobed'})"

    @property
    def emulator_root(self) -> str | None:
        return None

    async def probe(self) -> Tee:
        """Find out which TEE the kernel provides, by making and removing one report entry."""
        return await asyncio.to_thread(self._probe)

    def _probe(self) -> Tee:
        entry = self._root / f"contrast-probe-{secrets.token_hex(8)}"
        self._files.mkdir(entry)
        try:
            return self._read_provider(entry)
        finally:
            self._files.rmdir(entry)

    def _read_provider(self, entry: Path) -> Tee:
        provider = self._files.read(entry / "provider", 64).decode(errors="replace").strip()
        tee = _PROVIDERS.get(provider)
        if tee is None:
            raise EvidenceError("unsupported_platform", f"configfs-tsm provider {provider!r} is unsupported")
        self._tee, self._provider = tee, provider
        return tee

    def _generation(self, entry: Path) -> int:
        raw = self._files.read(entry / "generation", 32).decode(errors="replace").strip()
        try:
            return int(raw)
        except ValueError:
            raise EvidenceError("platform_error", f"configfs-tsm generation {raw!r} is no number") from None

    async def evidence(self, report_data: bytes) -> Evidence:
        try:
            return await asyncio.to_thread(self._evidence, check_report_data(report_data))
        except OSError as e:
            raise EvidenceError("platform_error", f"configfs-tsm request failed: {e}") from e

    def _evidence(self, report_data: bytes) -> Evidence:
        files = self._files
        entry = self._root / f"contrast-{secrets.token_hex(8)}"
        files.mkdir(entry)
        try:
            tee = self._read_provider(entry)
            before = self._generation(entry)
            writes = 0
            if self._vmpl is not None and tee == "snp":
                files.write(entry / "privlevel", f"{self._vmpl}\n".encode())
                writes += 1
            files.write(entry / "inblob", report_data)
            writes += 1
            outblob = files.read(entry / "outblob", _MAX_BLOB)
            aux = entry / "auxblob"
            auxblob = files.read(aux, _MAX_BLOB) if tee == "snp" and files.exists(aux) else b""
            if self._generation(entry) != before + writes:
                raise EvidenceError("platform_race", "the configfs-tsm entry changed while it was read")
        finally:
            files.rmdir(entry)
        if tee == "snp":
            certs = parse_cert_table(auxblob) if auxblob else {}
            chain = [certs[n] for n in ("vcek", "vlek", "ask", "ark") if n in certs]
            return Evidence(tee="snp", report=outblob, certs=chain)
        return Evidence(tee="tdx", report=outblob)
