from __future__ import annotations

from pathlib import Path

import pytest

from contrast.platform.select import PlatformConfigError, platform_from_env


async def test_no_tee_and_no_emulator_setting_is_an_error() -> None:
    # This machine has neither configfs-tsm nor /dev/sev-guest: "auto" must not fall back to the emulator.
    with pytest.raises(PlatformConfigError, match="emulated-snp"):
        await platform_from_env({"CONTRAST_PLATFORM": "auto"})


async def test_unknown_choice() -> None:
    with pytest.raises(PlatformConfigError):
        await platform_from_env({"CONTRAST_PLATFORM": "magic"})


@pytest.mark.parametrize("value", ["", "zz" * 32, "ab" * 31])
async def test_emulator_needs_a_policy_hash(value: str) -> None:
    with pytest.raises(PlatformConfigError):
        await platform_from_env({"CONTRAST_PLATFORM": "emulated-snp", "CONTRAST_EMULATED_POLICY_HASH": value})


async def test_emulated_snp_from_env(emulator_dir: Path) -> None:
    env = {
        "CONTRAST_PLATFORM": "emulated-snp",
        "CONTRAST_EMULATOR_DIR": str(emulator_dir),
        "CONTRAST_EMULATED_POLICY_HASH": "ab" * 32,
    }
    platform = await platform_from_env(env)
    assert platform.tee == "snp"
    assert platform.emulator_root is not None
    evidence = await platform.evidence(b"\x01" * 64)
    assert evidence.tee == "snp"
    assert evidence.report[0x50:0x90] == b"\x01" * 64
    assert evidence.report[0xC0:0xE0] == bytes.fromhex("ab" * 32)
