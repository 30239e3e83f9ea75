"""``contrast evidence show|verify`` on real files: exit codes, JSON, trailing bytes, --at, references."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from contrast.cli.main import main
from contrast.evidence.snp import abi
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from tests.evidence.snp.snp_fixtures import VECTORS, load_vector

AT = "2026-01-01T00:00:00Z"
VIRTEE = VECTORS / "snp_milan_v2_virtee"
GOSEV = VECTORS / "snp_milan_v2_gosevguest"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(["evidence", *argv])
    out = capsys.readouterr().out
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        return code, out


def test_show_prints_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run(capsys, "show", str(VIRTEE / "report.bin"), "--json")
    assert code == 0
    want = load_vector("snp_milan_v2_virtee").expected["decoded"]["report"]
    r = doc["report"]
    assert doc["format"] == "sev-snp"
    for key in (
        "version",
        "vmpl",
        "policy",
        "measurement",
        "report_data",
        "chip_id",
        "host_data",
        "current_version",
        "platform_info",
        "report_id",
        "id_key_digest",
    ):
        assert r[key] == want[key], key
    assert r["reported_tcb"]["microcode"] == want["reported_tcb"]["microcode"]
    assert r["policy_decoded"]["debug"] is False
    assert r["signer_info_decoded"]["signing_key"] == "VCEK"
    code, text = run(capsys, "show", str(VIRTEE / "report.bin"))
    assert code == 0
    assert "measurement: " + want["measurement"] in text


def test_trailing_bytes_need_consent(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "padded.bin"
    f.write_bytes((VIRTEE / "report.bin").read_bytes() + bytes(3065))
    code, doc = run(capsys, "show", str(f), "--json")
    assert (code, doc["reason"]) == (1, "evidence.bad_length")
    assert run(capsys, "show", str(f), "--json", "--trailing", "ok")[0] == 0
    code, doc = run(
        capsys, "verify", str(f), "--certs", str(VIRTEE / "vek.der"), "--at", AT, "--json", "--trailing", "ok"
    )
    assert code == 0, doc
    assert doc["accepted"] is True


def test_verify_authenticity_only(capsys: pytest.CaptureFixture[str]) -> None:
    bundle = str(VECTORS / "trust" / "amd_milan_ask_ark.pem")
    code, doc = run(
        capsys,
        "verify",
        str(VIRTEE / "report.bin"),
        "--certs",
        str(VIRTEE / "vek.der"),
        bundle,
        "--at",
        AT,
        "--json",
    )
    assert code == 0
    assert doc["accepted"] is True
    assert doc["reason"] is None
    assert doc["policy_checked"] is False
    assert doc["chain"]["product"] == "Milan"
    assert (
        doc["claims"]["measurement"]
        == load_vector("snp_milan_v2_virtee").expected["key_fields"]["measurement"]
    )


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--at", "2031-01-01T00:00:00+00:00"], "evidence.cert_expired"),
        (["--product", "Turin"], "evidence.product_mismatch"),
    ],
)
def test_verify_rejections(capsys: pytest.CaptureFixture[str], argv: list[str], reason: str) -> None:
    code, doc = run(
        capsys, "verify", str(VIRTEE / "report.bin"), "--certs", str(VIRTEE / "vek.der"), "--json", *argv
    )
    assert code == 1
    assert doc["accepted"] is False
    assert doc["reason"] == reason
    code, text = run(capsys, "verify", str(VIRTEE / "report.bin"), "--certs", str(VIRTEE / "vek.der"), *argv)
    assert code == 1
    assert text.startswith(f"REJECTED {reason}:")


def test_vcek_of_another_chip(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run(
        capsys, "verify", str(VIRTEE / "report.bin"), "--certs", str(GOSEV / "vek.der"), "--at", AT, "--json"
    )
    assert (code, doc["reason"]) == (1, "evidence.chip_id_mismatch")


def _refs_file(tmp_path: Path, snp: list[Any]) -> str:
    f = tmp_path / "refs.json"
    f.write_bytes(msgspec.json.encode({"snp": snp}))
    return str(f)


def test_gosevguest_is_rejected_for_debug(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = abi.parse_report((GOSEV / "report.bin").read_bytes())
    policy_bits = ("MigrateMA", "Debug", "SingleSocket", "CXLAllowed", "MemAES256XTS", "RAPLDis")
    policy_bits += ("CipherTextHiding", "PageSwapDisable")
    info_bits = ("SMTEnabled", "TSMEEnabled", "ECCEnabled", "RAPLDisabled", "CiphertextHidingDRAMEnabled")
    info_bits += ("AliasCheckComplete", "TIOEnabled")
    ref = {
        "Platform": "Metal-QEMU-SNP",
        "ProductName": "Milan",
        "TrustedMeasurement": r.measurement.hex(),
        "MinimumTCB": {"BootloaderVersion": 0, "TEEVersion": 0, "SNPVersion": 0, "MicrocodeVersion": 0},
        "GuestPolicy": {"ABIMinor": 0, "ABIMajor": 0, "SMT": True, **dict.fromkeys(policy_bits, False)},
        "PlatformInfo": dict.fromkeys(info_bits, False),
        "VMPL": 0,
        "AllowedChipIDs": ["*"],
        "MinimumMitigationVector": None,
    }
    refs = _refs_file(tmp_path, [ref])
    code, doc = run(
        capsys,
        "verify",
        str(GOSEV / "report.bin"),
        "--certs",
        str(GOSEV / "vek.der"),
        "--at",
        AT,
        "--reference-values",
        refs,
        "--report-data",
        r.report_data.hex(),
        "--json",
    )
    assert code == 1
    assert doc["reason"] == "policy.debug_enabled"
    assert doc["findings"][0]["field"] == "snp[0].POLICY.DEBUG"
    # The same reference values accept the virtee vector's non-debug policy modulo its measurement.
    code, doc = run(
        capsys,
        "verify",
        str(VIRTEE / "report.bin"),
        "--certs",
        str(VIRTEE / "vek.der"),
        "--at",
        AT,
        "--reference-values",
        refs,
        "--json",
    )
    assert (code, doc["reason"]) == (1, "policy.measurement_mismatch")


def test_emulated_report_with_reference_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, emulator: EmulatedSnpPlatform
) -> None:
    rd = bytes(range(64))
    report = tmp_path / "emu.bin"
    report.write_bytes(emulator.report(report_data=rd, product="Turin", version=5))
    certs = []
    for i, der in enumerate(emulator.cert_chain("Turin")):
        (tmp_path / f"c{i}.der").write_bytes(der)
        certs.append(str(tmp_path / f"c{i}.der"))
    crl = tmp_path / "crl.der"
    crl.write_bytes(emulator.crl())
    refs = _refs_file(tmp_path, [msgspec.to_builtins(emulator.reference_values(product="Turin"))])
    base = ["verify", str(report), "--certs", *certs, "--json"]
    code, doc = run(capsys, *base, "--reference-values", refs, "--report-data", rd.hex(), "--crl", str(crl))
    assert code == 0, doc
    assert doc["claims"]["platform"] == "Emulated-SNP"
    assert doc["report"]["reported_tcb"]["fmc"] == 0
    code, doc = run(capsys, *base)  # no reference values: the emulator root is just an unknown root
    assert (code, doc["reason"]) == (1, "evidence.untrusted_root")
    code, doc = run(capsys, *base, "--reference-values", refs, "--report-data", "00" * 64)
    assert (code, doc["reason"]) == (1, "policy.report_data_mismatch")


@pytest.mark.parametrize(
    "argv",
    [
        ["verify", "/nonexistent/report.bin"],
        ["show", "/nonexistent/report.bin"],
        ["verify", str(VIRTEE / "report.bin"), "--certs", "/nonexistent.pem"],
        ["verify", str(VIRTEE / "report.bin"), "--report-data", "zz"],
        ["verify", str(VIRTEE / "report.bin"), "--report-data", "00"],
        ["verify", str(VIRTEE / "report.bin"), "--at", "yesterday"],
        ["verify", str(VIRTEE / "report.bin"), "--product", "Naples"],
        ["verify", str(VIRTEE / "report.bin"), "--reference-values", str(VIRTEE / "report.bin")],
    ],
)
def test_usage_and_io_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert run(capsys, *argv)[0] == 2


def test_unknown_format_is_a_rejection(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "junk.bin"
    f.write_bytes(b"\x07" * 2000)
    code, doc = run(capsys, "verify", str(f), "--json")
    assert (code, doc["reason"]) == (1, "evidence.unknown_format")
    code, doc = run(capsys, "show", str(f), "--json")
    assert (code, doc["reason"]) == (1, "evidence.unknown_format")


def test_missing_subcommand_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["evidence"])
    assert e.value.code == 2


def contrast(*argv: str) -> tuple[int, str, str]:
    """The command as a user runs it: exit code, stdout, stderr."""
    r = subprocess.run(
        [sys.executable, "-m", "contrast.cli.main", *argv], capture_output=True, text=True, timeout=120
    )
    return r.returncode, r.stdout, r.stderr


def test_a_cut_report_is_named_by_its_length_as_a_long_one_is(tmp_path: Path) -> None:
    report = (VIRTEE / "report.bin").read_bytes()
    f = tmp_path / "report.bin"
    for data in (report[:-1], report[:600], report[: abi.OFF_SIGNATURE_ALGO + 4], report + b"\x00"):
        f.write_bytes(data)
        for command in ("verify", "show"):
            rc, out, err = contrast("evidence", command, str(f), "--json")
            assert (rc, json.loads(out)["reason"]) == (1, "evidence.bad_length"), (len(data), command, err)
    # Text: a finding without expected and got values says its message, never "expected '', got ''".
    f.write_bytes(report[:600])
    rc, out, _ = contrast("evidence", "verify", str(f))
    assert rc == 1
    assert out.startswith("REJECTED evidence.bad_length: ")
    assert "finding evidence.bad_length evidence: an SNP report is 1184 bytes, got 600" in out
    assert "expected ''" not in out


def test_a_bad_reference_values_file_says_what_is_wrong(tmp_path: Path) -> None:
    report = str(VIRTEE / "report.bin")
    for content, says in [
        (b'{"snp": [', "is not valid JSON (the file ends before the JSON document does)"),
        (b"\xff\xfe", "is not valid JSON"),
        (b'{"snp": 5}', "holds no valid reference values"),
        (b"[1]", "Expected `object`, got `array`"),
        (b'{"ReferenceValues": {"snp": [{"MinimumTCB": "x"}]}}', "at `$.snp[0]"),
    ]:
        f = tmp_path / "refs.json"
        f.write_bytes(content)
        rc, out, err = contrast("evidence", "verify", report, "--reference-values", str(f))
        assert rc == 2
        assert out == ""
        assert err.startswith(f"contrast evidence verify: --reference-values {f} ")
        assert says in err, err
