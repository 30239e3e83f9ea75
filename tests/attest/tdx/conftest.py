"""Fixtures for the TDX tests: the shared real vector with its collateral, and one emulated platform."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from tdx_helpers import EMU_NOW, VECTOR, load_collateral

from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.evidence.tdx.trust import TdxRoots
from contrast.evidence.tdx.verify import TdxCollateral, TdxVerifier


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
