"""Reference values for Intel TDX evidence: one entry of the manifest's ``ReferenceValues.tdx`` list.

JSON keys are exactly the field names below (PascalCase, as in the manifest). Semantics, all fail-closed:

- ``Platform``: the platform name. ``"Emulated-TDX"`` is the insecure local emulator and is accepted only
  together with ``EmulatorRootFingerprint``; any other name means real Intel hardware under the pinned
  Intel SGX Root CA.
- ``MrTd``, ``MrSeam``: 96 hex digits (48 bytes), compared byte for byte with the TD report.
- ``Rtmrs``: exactly four entries of 96 hex digits, RTMR0..RTMR3 in order.
- ``Xfam``: 16 hex digits, the 8 bytes exactly as they appear in the quote (little-endian u64).
- ``TdAttributes``: 16 hex digits as in the quote, compared exactly when given. ``None`` means "any
  attributes", but the DEBUG bit (bit 0) is refused in every case unless ``AllowDebugInsecure`` is true.
- ``AllowedPIIDs``: the PCK certificate's PlatformInstanceID (32 hex digits, DER byte order) must be one of
  these. ``["*"]`` is the explicit wildcard (any PIID, or none). An empty list rejects everything. A
  Processor-CA-issued PCK has no PIID and matches only the wildcard.
- ``MinTCBEvaluationDataNumber``: the TCB info's ``tcbEvaluationDataNumber`` (and the QE identity's) must
  be at least this. Without collateral this check cannot be made and rejects.
- ``AcceptedTCBStatuses``: the platform TCB status computed from collateral must be one of these
  (default only ``UpToDate``). ``NoMatch`` (no TCB level applies) is never acceptable.
- ``AllowDebugInsecure``: lets a debug TD through; for development only.
- ``EmulatorRootFingerprint``: 64 hex digits, SHA-256 of the emulator root certificate's DER. Required iff
  ``Platform == "Emulated-TDX"``, forbidden otherwise, so a manifest cannot put the emulator under a real
  platform name.

Hex is case-insensitive on input and normalised to lower case. A value that fails these rules is a
``ValueError`` at decode time (``msgspec.ValidationError`` when decoded with msgspec).
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec

EMULATED_PLATFORM: Final = "Emulated-TDX"
TCB_STATUSES: Final = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)
PIID_WILDCARD: Final = "*"

_HEX = re.compile(r"^[0-9a-fA-F]*$")

Hex96 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{96}$")]
Hex16 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{16}$")]
Hex64 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$")]
PiidOrWildcard = Annotated[str, msgspec.Meta(pattern=r"^(\*|[0-9a-fA-F]{32})$")]


def _check_hex(name: str, value: str, digits: int) -> None:
    if len(value) != digits or not _HEX.match(value):
        raise ValueError(f"{name} must be {digits} hex digits")


class TdxReferenceValues(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One acceptable TDX configuration. See the module docstring for the exact semantics."""

    Platform: str
    MrTd: Hex96
    MrSeam: Hex96
    Rtmrs: Annotated[list[Hex96], msgspec.Meta(min_length=4, max_length=4)]
    Xfam: Hex16
    AllowedPIIDs: Annotated[list[PiidOrWildcard], msgspec.Meta(max_length=4096)]
    MinTCBEvaluationDataNumber: Annotated[int, msgspec.Meta(ge=0)]
    TdAttributes: Hex16 | None = None
    AcceptedTCBStatuses: list[str] = msgspec.field(default_factory=lambda: ["UpToDate"])
    AllowDebugInsecure: bool = False
    EmulatorRootFingerprint: Hex64 | None = None

    def __post_init__(self) -> None:
        # msgspec runs the Meta checks on decode only; repeat them so that direct construction is as strict.
        _check_hex("MrTd", self.MrTd, 96)
        _check_hex("MrSeam", self.MrSeam, 96)
        if len(self.Rtmrs) != 4:
            raise ValueError("Rtmrs must have exactly 4 entries (RTMR0..RTMR3)")
        for i, rtmr in enumerate(self.Rtmrs):
            _check_hex(f"Rtmrs[{i}]", rtmr, 96)
        _check_hex("Xfam", self.Xfam, 16)
        if self.TdAttributes is not None:
            _check_hex("TdAttributes", self.TdAttributes, 16)
        for piid in self.AllowedPIIDs:
            if piid != PIID_WILDCARD:
                _check_hex("AllowedPIIDs[]", piid, 32)
        if PIID_WILDCARD in self.AllowedPIIDs and len(self.AllowedPIIDs) != 1:
            raise ValueError('AllowedPIIDs: the wildcard "*" must stand alone')
        if self.MinTCBEvaluationDataNumber < 0:
            raise ValueError("MinTCBEvaluationDataNumber must be >= 0")
        unknown = set(self.AcceptedTCBStatuses) - TCB_STATUSES
        if unknown:
            raise ValueError(f"AcceptedTCBStatuses: unknown status(es) {sorted(unknown)}")
        if not self.Platform:
            raise ValueError("Platform must not be empty")
        if self.Platform == EMULATED_PLATFORM:
            if self.EmulatorRootFingerprint is None:
                raise ValueError("EmulatorRootFingerprint is required for Platform Emulated-TDX")
            _check_hex("EmulatorRootFingerprint", self.EmulatorRootFingerprint, 64)
        elif self.EmulatorRootFingerprint is not None:
            raise ValueError("EmulatorRootFingerprint is only allowed with Platform Emulated-TDX")

    @property
    def is_emulated(self) -> bool:
        return self.Platform == EMULATED_PLATFORM

    @property
    def any_piid(self) -> bool:
        return self.AllowedPIIDs == [PIID_WILDCARD]
