"""The interface every evidence source implements."""

from __future__ import annotations

from typing import Protocol

from contrast.evidence.result import Tee
from contrast.evidence.verifier import Evidence


class Platform(Protocol):
    """A source of hardware evidence for this confidential VM."""

    @property
    def tee(self) -> Tee: ...

    @property
    def name(self) -> str:
        """A human-readable name for logs, e.g. ``configfs-tsm (sev_guest)`` or ``Emulated-SNP``."""
        ...

    @property
    def emulator_root(self) -> str | None:
        """Hex SHA-256 of the emulator root for emulated platforms; ``None`` on real hardware."""
        ...

    async def evidence(self, report_data: bytes) -> Evidence:
        """Evidence whose REPORT_DATA is exactly ``report_data`` (64 bytes)."""
        ...


def check_report_data(report_data: bytes) -> bytes:
    if len(report_data) != 64:
        raise ValueError(f"REPORT_DATA must be 64 bytes, got {len(report_data)}")
    return bytes(report_data)
