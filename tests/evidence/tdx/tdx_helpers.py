"""Shared constants, builders and fixtures for the TDX tests: the real vector with its collateral, and one
emulated platform."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from contrast.evidence.tdx import emulator
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.evidence.tdx.reference import TdxReferenceValues
from contrast.evidence.tdx.trust import TdxRoots
from contrast.evidence.tdx.verify import COLLATERAL_FILES, TdxCollateral, TdxVerifier

VECTOR = Path(__file__).resolve().parents[2] / "data" / "vectors" / "tdx_v4_gotdxguest_spr"
# Inside every window of the vector's collateral: TCB info 06-18..07-18, QE identity 06-08..07-08, PCK CRL
# 06-08..07-08 (2023), root CRL 2023-04..2024-04, TCB-signing certificate until 2025-05-21.
REAL_NOW = dt.datetime(2023, 7, 1, tzinfo=dt.UTC)
EMU_NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)


def load_collateral(directory: Path) -> TdxCollateral:
    return TdxCollateral(**{k: (directory / v).read_bytes() for k, v in COLLATERAL_FILES.items()})


MRTD = bytes.fromhex("11" * 48)
RTMRS = tuple(bytes([0x20 + i]) * 48 for i in range(4))
POLICY_HASH = bytes.fromhex("ab" * 32)
REPORT_DATA = bytes(range(64))


def emu_reference(platform: EmulatedTdxPlatform, **overrides: Any) -> TdxReferenceValues:
    values: dict[str, Any] = {
        "Platform": "Emulated-TDX",
        "MrTd": MRTD.hex(),
        "MrSeam": emulator.DEFAULT_MR_SEAM.hex(),
        "Rtmrs": [r.hex() for r in RTMRS],
        "Xfam": emulator.DEFAULT_XFAM.hex(),
        "TdAttributes": emulator.DEFAULT_TD_ATTRIBUTES.hex(),
        "AllowedPIIDs": [(platform.pck_extensions.piid or b"").hex()],
        "MinTCBEvaluationDataNumber": emulator.TCB_EVALUATION_DATA_NUMBER,
        "EmulatorRootFingerprint": platform.root_fingerprint,
    }
    values.update(overrides)
    return TdxReferenceValues(**values)


def emu_quote(platform: EmulatedTdxPlatform, **overrides: Any) -> bytes:
    kwargs: dict[str, Any] = {
        "report_data": REPORT_DATA,
        "mr_config_id": POLICY_HASH,
        "mrtd": MRTD,
        "rtmrs": RTMRS,
    }
    kwargs.update(overrides)
    return platform.quote(**kwargs)


@pytest.fixture(scope="session")
def expected() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTOR / "expected.json").read_text())
    return data


@pytest.fixture(scope="session")
def real_quote() -> bytes:
    return (VECTOR / "quote.bin").read_bytes()


@pytest.fixture(scope="session")
def real_collateral() -> TdxCollateral:
    return load_collateral(VECTOR)


@pytest.fixture(scope="session")
def intel_verifier() -> TdxVerifier:
    return TdxVerifier(TdxRoots.intel())


@pytest.fixture(scope="session")
def platform() -> EmulatedTdxPlatform:
    return EmulatedTdxPlatform.create(now=EMU_NOW - dt.timedelta(days=2))


@pytest.fixture(scope="session")
def emu_verifier(platform: EmulatedTdxPlatform) -> TdxVerifier:
    return TdxVerifier(TdxRoots.emulated(platform.root_fingerprint))


@pytest.fixture(scope="session")
def emu_collateral(platform: EmulatedTdxPlatform) -> TdxCollateral:
    return platform.collateral(issued=EMU_NOW - dt.timedelta(days=1))
