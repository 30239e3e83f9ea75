"""Platform reference values: expected-missing markers are found, refused by the decoder, and fillable."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from contrast.errors import RequestError
from contrast.evidence.refvalues import ReferenceValues
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
    assert msgspec.to_builtins(decoded)["tdx"][0]["Platform"] == "Metal-QEMU-TDX"


def test_expected_missing_paths_are_json_pointers() -> None:
    doc = {"a/b": [1, platforms.EXPECTED_MISSING], "c": {"~": platforms.EXPECTED_MISSING}}
    paths = platforms.expected_missing_paths(doc)
    assert paths == ["/a~1b/1", "/c/~0"]
    assert all(jsonpatch.get(doc, p) == platforms.EXPECTED_MISSING for p in paths)


def test_unknown_platform_refused(tmp_path: Path) -> None:
    with pytest.raises(RequestError) as e:
        platforms.reference_values("Metal-QEMU-SEV", emulator_dir=tmp_path)
    assert e.value.code == "request.platform_unknown"


@pytest.fixture(scope="session")
def emulator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared with test_generate_run (same base directory): the SNP emulator's RSA-4096 keys take seconds.
    d = tmp_path_factory.getbasetemp() / "snp-emulator"
    d.mkdir(exist_ok=True)
    return d


@pytest.mark.parametrize(("name", "tee"), [("Emulated-SNP", "snp"), ("emulated-tdx", "tdx")])
def test_emulated_platforms_are_complete_and_pin_the_emulator_root(
    name: str, tee: str, emulator_dir: Path
) -> None:
    rv = platforms.reference_values(name, emulator_dir=emulator_dir)
    assert platforms.expected_missing_paths(rv) == []
    entries = rv[tee]
    assert entries
    assert rv["tdx" if tee == "snp" else "snp"] == []
    decoded = msgspec.to_builtins(msgspec.convert(rv, ReferenceValues, strict=True))
    fingerprints = {e["EmulatorRootFingerprint"] for e in decoded[tee]}
    assert len(fingerprints) == 1
    # Same state directory, same root: a second generate run changes no byte. (TDX only: reloading the SNP
    # emulator's RSA-4096 keys costs seconds, and its reload is tested with the emulator itself.)
    if tee == "tdx":
        assert platforms.reference_values(name, emulator_dir=emulator_dir) == rv
    # The emulator's root is what the reference values pin.
    from contrast.platform import emulated

    load = emulated.load_snp_emulator if tee == "snp" else emulated.load_tdx_emulator
    root = load(emulator_dir).root_fingerprint
    assert fingerprints == {root}
