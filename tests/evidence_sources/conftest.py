from __future__ import annotations

from pathlib import Path

import pytest

from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.platform import emulated


@pytest.fixture(scope="session")
def emulator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One emulator state for the whole session: RSA-4096 key generation takes seconds."""
    d = tmp_path_factory.mktemp("emulator")
    emulated.load_snp_emulator(d)
    emulated.load_tdx_emulator(d)
    return d


@pytest.fixture(scope="session")
def snp_emulator(emulator_dir: Path) -> EmulatedSnpPlatform:
    return emulated.load_snp_emulator(emulator_dir)


@pytest.fixture(scope="session")
def tdx_emulator(emulator_dir: Path) -> EmulatedTdxPlatform:
    return emulated.load_tdx_emulator(emulator_dir)
