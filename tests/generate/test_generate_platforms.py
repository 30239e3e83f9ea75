"""Platform reference values: expected-missing markers are found, refused by the decoder, and fillable."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from contrast.attest.refvalues import ReferenceValues
from contrast.errors import RequestError
from contrast.generate import jsonpatch, platforms


@pytest.mark.parametrize(
    "name", ["Metal-QEMU-SNP", "AKS-CLH-SNP", "K3s-QEMU-SNP", "Metal-QEMU-TDX", "K3s-QEMU-TDX"]
)
def test_real_platforms_mark_what_must_be_filled(name: str, tmp_path: Path) -> None:
    rv = platforms.reference_values(name.lower(), emulator_dir=tmp_path)
    missing = platforms.expected_missing_paths(rv)
    assert missing
    entries = rv["snp"] + rv["tdx"]
    assert entries
    assert all(e["Platform"] == name for e in entries)
    # The strict decoder rejects the marker wherever it stands.
    with pytest.raises((msgspec.ValidationError, ValueError)):
        msgspec.convert(rv, ReferenceValues, strict=True)


def test_tdx_filled_values_decode(tmp_path: Path) -> None:
    rv = platforms.reference_values("Metal-QEMU-TDX", emulator_dir=tmp_path)
    values = {
        "MrTd": "ab" * 48,
        "MrSeam": "cd" * 48,
        "Xfam": "e702060000000000",
        "TdAttributes": "0000001000000000",
        "MinTCBEvaluationDataNumber": 17,
    }
    ops = [{"op": "replace", "path": f"/tdx/0/{k}", "value": v} for k, v in values.items()]
    ops += [{"op": "replace", "path": f"/tdx/0/Rtmrs/{i}", "value": "00" * 48} for i in range(4)]
    filled = jsonpatch.apply(rv, ops)
    assert platforms.expected_missing_paths(filled) == []
    decoded = msgspec.convert(filled, ReferenceValues, strict=True)
    assert decoded.tdx[0].platform == "Metal-QEMU-TDX"
    assert not decoded.tdx[0].is_emulated


def test_expected_missing_paths_are_json_pointers() -> None:
    doc = {"a/b": [1, platforms.EXPECTED_MISSING], "c": {"~": platforms.EXPECTED_MISSING}}
    paths = platforms.expected_missing_paths(doc)
    assert paths == ["/a~1b/1", "/c/~0"]
    assert all(jsonpatch.get(doc, p) == platforms.EXPECTED_MISSING for p in paths)


def test_unknown_platform_refused(tmp_path: Path) -> None:
    with pytest.raises(RequestError) as e:
        platforms.reference_values("Metal-QEMU-SEV", emulator_dir=tmp_path)
    assert e.value.code == "request.platform_unknown"
