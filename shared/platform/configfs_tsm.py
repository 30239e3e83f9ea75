"""Evidence through the Linux configfs-tsm report interface (``/sys/kernel/config/tsm/report``).

Protocol (kernel ``Documentation/ABI/testing/configfs-tsm``): make a report directory, write REPORT_DATA
to ``inblob``, read ``outblob`` (and ``auxblob``: the SNP certificate table), and compare ``generation``
before and after so that a concurrent writer to the same entry cannot hand us someone else's report. Each
request uses a fresh directory, removed afterwards. File I/O runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Final

from contrast.errors import EvidenceError
from contrast.evidence.result import Tee
from contrast.evidence.verifier import Evidence
from contrast.platform.base import check_report_data
from contrast.platform.certtable import parse_cert_table

DEFAULT_ROOT: Final = Path("/sys/kernel/config/tsm/report")
_PROVIDERS: Final[dict[str, Tee]] = {"sev_guest": "snp", "tdx_guest": "tdx"}


class ConfigfsTsm:
    """A real SNP or TDX guest reached through configfs-tsm."""

    def __init__(self, root: Path = DEFAULT_ROOT, *, vmpl: int | None = None) -> None:
        self._root = root
        self._vmpl = vmpl
        self._tee: Tee | None = None
        self._provider = ""

    @classmethod
    def available(cls, root: Path = DEFAULT_ROOT) -> bool:
        return root.is_dir()

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
        entry.mkdir()
        try:
            return self._read_provider(entry)
        finally:
            entry.rmdir()

    def _read_provider(self, entry: Path) -> Tee:
        provider = (entry / "provider").read_text().strip()
        tee = _PROVIDERS.get(provider)
        if tee is None:
            raise EvidenceError("unsupported_platform", f"configfs-tsm provider {provider!r} is unsupported")
        self._tee, self._provider = tee, provider
        return tee

    async def evidence(self, report_data: bytes) -> Evidence:
        try:
            return await asyncio.to_thread(self._evidence, check_report_data(report_data))
        except OSError as e:
            raise EvidenceError("platform_error", f"configfs-tsm request failed: {e}") from e

    def _evidence(self, report_data: bytes) -> Evidence:
        entry = self._root / f"contrast-{secrets.token_hex(8)}"
        entry.mkdir()
        try:
            tee = self._read_provider(entry)
            if self._vmpl is not None and tee == "snp":
                (entry / "privlevel").write_text(str(self._vmpl))
            (entry / "inblob").write_bytes(report_data)
            before = (entry / "generation").read_text().strip()
            outblob = (entry / "outblob").read_bytes()
            aux = entry / "auxblob"
            auxblob = aux.read_bytes() if tee == "snp" and aux.exists() else b""
            after = (entry / "generation").read_text().strip()
            if before != after:
                raise EvidenceError("platform_race", "the configfs-tsm entry changed while it was read")
        finally:
            os.rmdir(entry)
        if tee == "snp":
            certs = parse_cert_table(auxblob) if auxblob else {}
            chain = [certs[n] for n in ("vcek", "vlek", "ask", "ark") if n in certs]
            return Evidence(tee="snp", report=outblob, certs=chain)
        return Evidence(tee="tdx", report=outblob)
