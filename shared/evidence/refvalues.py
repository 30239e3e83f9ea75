"""The manifest's ``ReferenceValues``: what evidence of each TEE must show to be accepted.

JSON keys are exactly ``snp`` and ``tdx``; each holds a list of alternative reference-value sets, and
validation accepts evidence when one set of its TEE matches (reporting every finding otherwise). An empty list
for a TEE means evidence of that TEE is never accepted.

Emulated platforms are insecure by construction. One manifest never mixes them with real platforms: a
``ReferenceValues`` whose ``snp`` list names ``Emulated-SNP`` next to a real SNP platform fails to decode.
"""

from __future__ import annotations

import msgspec

from contrast.evidence.snp.reference import EMULATED_PLATFORM as SNP_EMULATED_PLATFORM
from contrast.evidence.snp.reference import SnpReferenceValues
from contrast.evidence.tdx.reference import EMULATED_PLATFORM as TDX_EMULATED_PLATFORM
from contrast.evidence.tdx.reference import TdxReferenceValues

__all__ = ["ReferenceValues", "SnpReferenceValues", "TdxReferenceValues"]


class ReferenceValues(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    snp: list[SnpReferenceValues] = []
    tdx: list[TdxReferenceValues] = []

    def __post_init__(self) -> None:
        # Across both TEEs: one manifest trusts either only emulators or only real hardware, so an emulator
        # root can never stand next to (and be mistaken for) a vendor root.
        emulated = {rv.Platform == SNP_EMULATED_PLATFORM for rv in self.snp}
        emulated |= {rv.Platform == TDX_EMULATED_PLATFORM for rv in self.tdx}
        if len(emulated) > 1:
            raise ValueError(
                f"the insecure platforms {SNP_EMULATED_PLATFORM!r}/{TDX_EMULATED_PLATFORM!r} must not be"
                " mixed with real platforms"
            )
