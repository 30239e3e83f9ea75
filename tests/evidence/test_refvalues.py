"""ReferenceValues never mixes the insecure emulators with real hardware, within or across TEEs."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from contrast.evidence.refvalues import ReferenceValues
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform


@pytest.fixture(scope="module")
def snp_emulated() -> dict[str, Any]:
    rv = EmulatedSnpPlatform.create().reference_values()
    out: dict[str, Any] = msgspec.to_builtins(rv)
    return out


def _tdx(platform: str, fingerprint: str | None) -> dict[str, Any]:
    rv: dict[str, Any] = {
        "Platform": platform,
        "MrTd": "00" * 48,
        "MrSeam": "00" * 48,
        "Rtmrs": ["00" * 48] * 4,
        "Xfam": "00" * 8,
        "AllowedPIIDs": ["*"],
        "MinTCBEvaluationDataNumber": 0,
    }
    if fingerprint:
        rv["EmulatorRootFingerprint"] = fingerprint
    return rv


def _decode(obj: dict[str, Any]) -> ReferenceValues:
    return msgspec.json.decode(msgspec.json.encode(obj), type=ReferenceValues)


def test_emulated_tdx_next_to_real_tdx_is_refused() -> None:
    fp = EmulatedTdxPlatform.create().root_fingerprint
    with pytest.raises(msgspec.ValidationError, match="must not be mixed"):
        _decode({"tdx": [_tdx("Emulated-TDX", fp), _tdx("Metal-QEMU-TDX", None)]})


def test_emulated_snp_next_to_real_tdx_is_refused(snp_emulated: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError, match="must not be mixed"):
        _decode({"snp": [snp_emulated], "tdx": [_tdx("Metal-QEMU-TDX", None)]})


def test_all_emulated_is_fine(snp_emulated: dict[str, Any]) -> None:
    fp = EmulatedTdxPlatform.create().root_fingerprint
    refs = _decode({"snp": [snp_emulated], "tdx": [_tdx("Emulated-TDX", fp)]})
    assert len(refs.snp) == 1
    assert len(refs.tdx) == 1
