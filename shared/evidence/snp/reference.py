"""SNP reference values: one entry of the manifest's ``ReferenceValues.snp`` list.

JSON keys are the Go-style names used by Contrast/go-sev-guest. Semantics, chosen to fail closed:

* Every field without a default must be present; ``null`` is accepted only where the type says ``| None`` and
  then means "no requirement" *explicitly* (``MinimumMitigationVector``, ``EmulatorRootFingerprint``).
* Hex strings are checked for exact length and lower/upper-case hex digits when the struct is decoded.
* ``TrustedMeasurement`` (96 hex): MEASUREMENT must equal it.
* ``GuestPolicy``: the report's POLICY must equal the policy these fields encode (bit 17, which the ABI
  requires to be one, is implied) -- exact, not "at most", so a manifest pins exactly what it reviewed.
  A report whose POLICY allows DEBUG is refused (``policy.debug_enabled``) unless ``AllowDebugInsecure`` is
  true; ``GuestPolicy.Debug = true`` without ``AllowDebugInsecure`` is a decode error.
* ``PlatformInfo``: each bit set to true must be set in PLATFORM_INFO; false bits are not constrained.
* ``VMPL``: the report's VMPL must equal it.
* ``MinimumTCB``: each component of CURRENT_TCB, COMMITTED_TCB, REPORTED_TCB and LAUNCH_TCB must be >= the
  minimum, per component, decoded with the product's layout. ``FMCVersion`` is required for Turin and
  forbidden for Milan/Genoa (they have no FMC component).
* ``MinimumMitigationVector``: when an integer, every bit set in it must be set in both LAUNCH_MIT_VECTOR and
  CURRENT_MIT_VECTOR; such a requirement rejects reports older than v5 (they carry no vector). ``null`` means
  no requirement.
* ``AllowedChipIDs``: CHIP_ID (128 hex) must be in the list; ``["*"]`` is the explicit wildcard (and must be
  alone). An empty list is a decode error.
* ``TrustedIDKeyDigests``: when non-empty, ID_KEY_DIGEST (96 hex) must be one of them; empty means the ID key
  is not constrained (the measurement already pins the launched image).
* ``Platform``: a platform name. ``Emulated-SNP`` is insecure: it requires ``EmulatorRootFingerprint``
  (64 hex, SHA-256 of the emulator's ARK DER) and is the *only* way an emulator-rooted chain is accepted;
  any other platform forbids that field and accepts only AMD's pinned ARKs.
* ``ProductName``: Milan, Genoa or Turin; must equal the product the verified chain/CPUID established.
* ``CheckRevocations``: when true, the chain must have been checked against a CRL signed by the pinned ARK
  (``policy.crl_missing`` otherwise); the verifier fetches AMD's CRL when the evidence carries none. ``null``
  (the default) means true for real platforms and false for ``Emulated-SNP``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

EMULATED_PLATFORM = "Emulated-SNP"
WILDCARD = "*"

Product = Literal["Milan", "Genoa", "Turin"]
SPL = Annotated[int, msgspec.Meta(ge=0, le=255)]

_PLATFORM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_HEX = re.compile(r"^[0-9a-fA-F]*$")


def check_hex(name: str, value: str, nbytes: int) -> bytes:
    """Decode ``value`` as exactly ``nbytes`` bytes of hex, or raise ValueError naming the field."""
    if len(value) != 2 * nbytes or not _HEX.match(value):
        raise ValueError(f"{name}: expected {2 * nbytes} hex digits, got {len(value)} characters")
    return bytes.fromhex(value)


class SnpTcb(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    BootloaderVersion: SPL
    TEEVersion: SPL
    SNPVersion: SPL
    MicrocodeVersion: SPL
    FMCVersion: SPL | None = None


class SnpGuestPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ABIMinor: SPL
    ABIMajor: SPL
    SMT: bool
    MigrateMA: bool
    Debug: bool
    SingleSocket: bool
    CXLAllowed: bool
    MemAES256XTS: bool
    RAPLDis: bool
    CipherTextHiding: bool
    PageSwapDisable: bool


class SnpPlatformInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bits that must be set in PLATFORM_INFO. ``False`` means "not required", not "must be clear"."""

    SMTEnabled: bool
    TSMEEnabled: bool
    ECCEnabled: bool
    RAPLDisabled: bool
    CiphertextHidingDRAMEnabled: bool
    AliasCheckComplete: bool
    TIOEnabled: bool


class SnpReferenceValues(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    Platform: str
    ProductName: Product
    TrustedMeasurement: str
    MinimumTCB: SnpTcb
    GuestPolicy: SnpGuestPolicy
    PlatformInfo: SnpPlatformInfo
    VMPL: Annotated[int, msgspec.Meta(ge=0, le=3)]
    AllowedChipIDs: list[str]
    MinimumMitigationVector: Annotated[int, msgspec.Meta(ge=0)] | None
    TrustedIDKeyDigests: list[str] = []
    AllowDebugInsecure: bool = False
    EmulatorRootFingerprint: str | None = None
    CheckRevocations: bool | None = None

    def __post_init__(self) -> None:
        # msgspec turns a ValueError here into a ValidationError at decode time: bad values never load.
        if not _PLATFORM_NAME.match(self.Platform):
            raise ValueError(f"Platform: invalid platform name {self.Platform!r}")
        check_hex("TrustedMeasurement", self.TrustedMeasurement, 48)
        if self.MinimumMitigationVector is not None and self.MinimumMitigationVector >= 1 << 64:
            raise ValueError("MinimumMitigationVector: a u64 bit vector")
        if (self.ProductName == "Turin") != (self.MinimumTCB.FMCVersion is not None):
            raise ValueError("MinimumTCB.FMCVersion: required for Turin and forbidden for Milan and Genoa")
        if self.GuestPolicy.Debug and not self.AllowDebugInsecure:
            raise ValueError("GuestPolicy.Debug: debug guests need AllowDebugInsecure = true")
        if not self.AllowedChipIDs:
            raise ValueError('AllowedChipIDs: empty; list chip IDs or use the explicit wildcard ["*"]')
        if WILDCARD in self.AllowedChipIDs:
            if len(self.AllowedChipIDs) != 1:
                raise ValueError('AllowedChipIDs: the wildcard "*" must be the only entry')
        else:
            for i, chip in enumerate(self.AllowedChipIDs):
                check_hex(f"AllowedChipIDs[{i}]", chip, 64)
        for i, digest in enumerate(self.TrustedIDKeyDigests):
            check_hex(f"TrustedIDKeyDigests[{i}]", digest, 48)
        if self.Platform == EMULATED_PLATFORM:
            if self.EmulatorRootFingerprint is None:
                raise ValueError(f"EmulatorRootFingerprint: required for Platform {EMULATED_PLATFORM!r}")
            check_hex("EmulatorRootFingerprint", self.EmulatorRootFingerprint, 32)
        elif self.EmulatorRootFingerprint is not None:
            raise ValueError(f"EmulatorRootFingerprint: allowed only with Platform {EMULATED_PLATFORM!r}")

    @property
    def is_emulated(self) -> bool:
        return self.Platform == EMULATED_PLATFORM

    @property
    def requires_crl(self) -> bool:
        """Whether the chain must have been checked against AMD's CRL (on by default for real platforms)."""
        return (not self.is_emulated) if self.CheckRevocations is None else self.CheckRevocations


def any_requires_crl(references: list[SnpReferenceValues]) -> bool:
    """Whether some reference set needs a CRL: then a verifier gets one for evidence that carries none."""
    return any(ref.requires_crl for ref in references)
