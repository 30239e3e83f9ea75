"""Reference values for ``contrast generate --reference-values PLATFORM``.

Real platforms get every value this code base can know in advance (product lines, the Kata guest policy,
VMPL, wildcards that the manifest spells out explicitly). Values that depend on the operator's node image and
firmware (launch measurement, minimum TCB, MRTD/RTMRs, ...) are set to the marker :data:`EXPECTED_MISSING`.
The marker is not a valid value of any field: the strict manifest decoder rejects it (a string where a number
or exact-length hex is required), and :func:`expected_missing_paths` lets ``contrast set`` name every field
still to be filled.

Emulated platforms (``Emulated-SNP``, ``Emulated-TDX``) are filled completely from the local emulator's state:
its root certificate fingerprint and the measurements it reports. They are insecure by construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from contrast.errors import RequestError

EXPECTED_MISSING = "EXPECTED-MISSING"

EMULATED_SNP = "Emulated-SNP"
EMULATED_TDX = "Emulated-TDX"

# Kata's default SNP guest policy 0x30000: SMT allowed, everything else (debug, migration agent, ...) off.
_KATA_GUEST_POLICY: dict[str, Any] = {
    "ABIMinor": 0,
    "ABIMajor": 0,
    "SMT": True,
    "MigrateMA": False,
    "Debug": False,
    "SingleSocket": False,
    "CXLAllowed": False,
    "MemAES256XTS": False,
    "RAPLDis": False,
    "CipherTextHiding": False,
    "PageSwapDisable": False,
}
_NO_PLATFORM_INFO_REQUIREMENT: dict[str, Any] = {
    "SMTEnabled": False,
    "TSMEEnabled": False,
    "ECCEnabled": False,
    "RAPLDisabled": False,
    "CiphertextHidingDRAMEnabled": False,
    "AliasCheckComplete": False,
    "TIOEnabled": False,
}
_SNP_PLATFORMS: dict[str, tuple[str, ...]] = {
    "Metal-QEMU-SNP": ("Milan", "Genoa"),
    "K3s-QEMU-SNP": ("Milan", "Genoa"),
    "AKS-CLH-SNP": ("Milan", "Genoa"),
}
_TDX_PLATFORMS = ("Metal-QEMU-TDX", "K3s-QEMU-TDX")


def platform_names() -> list[str]:
    return sorted([*_SNP_PLATFORMS, *_TDX_PLATFORMS, EMULATED_SNP, EMULATED_TDX])


def canonical_name(name: str) -> str:
    for known in platform_names():
        if known.lower() == name.lower():
            return known
    raise RequestError(
        "platform_unknown", f"unknown platform {name!r}; known platforms: {', '.join(platform_names())}"
    )


def _snp_entry(platform: str, product: str) -> dict[str, Any]:
    missing_tcb = dict.fromkeys(
        ("BootloaderVersion", "TEEVersion", "SNPVersion", "MicrocodeVersion"), EXPECTED_MISSING
    )
    return {
        "Platform": platform,
        "ProductName": product,
        "TrustedMeasurement": EXPECTED_MISSING,
        "MinimumTCB": missing_tcb,
        "GuestPolicy": dict(_KATA_GUEST_POLICY),
        "PlatformInfo": dict(_NO_PLATFORM_INFO_REQUIREMENT),
        "VMPL": 0,
        "AllowedChipIDs": ["*"],
        "MinimumMitigationVector": None,
    }


def _tdx_entry(platform: str) -> dict[str, Any]:
    return {
        "Platform": platform,
        "MrTd": EXPECTED_MISSING,
        "MrSeam": EXPECTED_MISSING,
        "Rtmrs": [EXPECTED_MISSING] * 4,
        "Xfam": EXPECTED_MISSING,
        "TdAttributes": EXPECTED_MISSING,
        "AllowedPIIDs": ["*"],
        "MinTCBEvaluationDataNumber": EXPECTED_MISSING,
        "AcceptedTCBStatuses": ["UpToDate"],
    }


def _emulated_snp(emulator_dir: Path) -> list[dict[str, Any]]:
    from contrast.platform import emulated

    platform = emulated.load_snp_emulator(emulator_dir)
    # One entry per product line: the emulator signs for each, with the same root and measurement.
    return [
        msgspec.to_builtins(
            platform.reference_values(product=p, measurement=emulated.SNP_DEFAULT_MEASUREMENT)
        )
        for p in ("Milan", "Genoa", "Turin")
    ]


def _emulated_tdx(emulator_dir: Path) -> list[dict[str, Any]]:
    from contrast.evidence.tdx import emulator
    from contrast.platform import emulated

    platform = emulated.load_tdx_emulator(emulator_dir)
    # Exactly what an emulated TDX guest (contrast.platform.emulated.EmulatedTdx) reports by default.
    return [
        {
            "Platform": EMULATED_TDX,
            "MrTd": emulated.TDX_DEFAULT_MRTD.hex(),
            "MrSeam": emulator.DEFAULT_MR_SEAM.hex(),
            "Rtmrs": [r.hex() for r in emulated.TDX_DEFAULT_RTMRS],
            "Xfam": emulator.DEFAULT_XFAM.hex(),
            "TdAttributes": emulator.DEFAULT_TD_ATTRIBUTES.hex(),
            "AllowedPIIDs": ["*"],
            "MinTCBEvaluationDataNumber": emulator.TCB_EVALUATION_DATA_NUMBER,
            "AcceptedTCBStatuses": ["UpToDate"],
            "EmulatorRootFingerprint": platform.root_fingerprint,
        }
    ]


def reference_values(platform: str, *, emulator_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The manifest's ``ReferenceValues`` object for ``platform`` (case-insensitive name)."""
    name = canonical_name(platform)
    if name == EMULATED_SNP:
        return {"snp": _emulated_snp(emulator_dir), "tdx": []}
    if name == EMULATED_TDX:
        return {"snp": [], "tdx": _emulated_tdx(emulator_dir)}
    if name in _SNP_PLATFORMS:
        return {"snp": [_snp_entry(name, p) for p in _SNP_PLATFORMS[name]], "tdx": []}
    return {"snp": [], "tdx": [_tdx_entry(name)]}


def expected_missing_paths(value: Any, path: str = "") -> list[str]:
    """JSON pointers of every value still set to :data:`EXPECTED_MISSING` (for a clear refusal in ``set``)."""
    if isinstance(value, str):
        return [path or "/"] if value == EXPECTED_MISSING else []
    if isinstance(value, dict):
        out: list[str] = []
        for k in sorted(value):
            esc = str(k).replace("~", "~0").replace("/", "~1")
            out += expected_missing_paths(value[k], f"{path}/{esc}")
        return out
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in expected_missing_paths(v, f"{path}/{i}")]
    return []
