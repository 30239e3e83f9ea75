"""``contrast evidence show|verify`` on TDX quotes: detection, collateral flags, exit codes."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from contrast.cli import evidence as ev
from contrast.cli.evidence_tdx import FORMAT, TdxVerifyInputs, add_verify_arguments, read_verify_options
from contrast.cli.exitcodes import EXIT_OK, EXIT_REJECTED, UsageError
from contrast.cli.main import main
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.evidence.tdx.verify import COLLATERAL_FILES, TdxCollateral
from tests.evidence.tdx.tdx_helpers import EMU_NOW, REAL_NOW, REPORT_DATA, VECTOR, emu_quote, emu_reference


def _inputs(now: dt.datetime, **kw: Any) -> TdxVerifyInputs:
    base: dict[str, Any] = {
        "certs": [],
        "crl": None,
        "reference_values": None,
        "report_data": None,
        "product": None,
        "now": now,
        "trailing_ok": False,
    }
    base.update(kw)
    return TdxVerifyInputs(**base)


def test_show_detects_a_tdx_quote(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evidence", "show", str(VECTOR / "quote.bin"), "--json"]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "tdx"
    assert out["report"]["trailing_bytes"] == 39
    assert out["report"]["mr_td"].startswith("6363b8043668a3ad")


def test_verify_without_collateral_flags_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evidence", "verify", str(VECTOR / "quote.bin"), "--json", "--at", "2023-07-01T00:00:00Z"])
    assert code == EXIT_REJECTED
    assert json.loads(capsys.readouterr().out)["reason"] == "collateral.missing"


def test_truncated_quote_is_rejected_with_a_typed_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "q.bin"
    f.write_bytes((VECTOR / "quote.bin").read_bytes()[:1000])
    assert main(["evidence", "show", str(f), "--json"]) == EXIT_REJECTED
    assert json.loads(capsys.readouterr().out)["reason"] == "evidence.malformed"


def test_flags_and_collateral_directory() -> None:
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    args = parser.parse_args(["--collateral", str(VECTOR)])
    base = _inputs(REAL_NOW)
    inputs = read_verify_options(
        args, ev.VerifyInputs(**{f: getattr(base, f) for f in ev.VerifyInputs.__dataclass_fields__})
    )
    assert inputs.collateral == TdxCollateral(
        **{k: (VECTOR / v).read_bytes() for k, v in COLLATERAL_FILES.items()}
    )
    assert not inputs.no_collateral
    with pytest.raises(SystemExit):
        parser.parse_args(["--collateral", str(VECTOR), "--no-collateral"])
    with pytest.raises(UsageError):
        read_verify_options(parser.parse_args(["--collateral", "/nonexistent"]), base)


def test_real_vector_with_collateral_reports_no_match_without_enforcing(
    real_collateral: TdxCollateral,
) -> None:
    out = FORMAT.verify((VECTOR / "quote.bin").read_bytes(), _inputs(REAL_NOW, collateral=real_collateral))
    assert out.accepted
    assert out.data["verified"]["tcb_status"] == "NoMatch"
    assert out.data["policy_checked"] is False
    late = FORMAT.verify(
        (VECTOR / "quote.bin").read_bytes(),
        _inputs(dt.datetime(2025, 1, 1, tzinfo=dt.UTC), collateral=real_collateral),
    )
    assert late.reason == "collateral.stale"


def test_no_collateral_is_authenticity_only() -> None:
    out = FORMAT.verify((VECTOR / "quote.bin").read_bytes(), _inputs(REAL_NOW, no_collateral=True))
    assert out.accepted
    assert "not evaluated" in out.data["verified"]["tcb_status"]


def test_emulated_quote_with_reference_values(
    platform: EmulatedTdxPlatform, emu_collateral: TdxCollateral
) -> None:
    refs = msgspec.json.encode({"tdx": [emu_reference(platform)]})
    quote = emu_quote(platform)
    ok = FORMAT.verify(
        quote, _inputs(EMU_NOW, collateral=emu_collateral, reference_values=refs, report_data=REPORT_DATA)
    )
    assert ok.accepted, ok.message
    assert ok.data["report_data_checked"] is True
    bad = FORMAT.verify(
        quote, _inputs(EMU_NOW, collateral=emu_collateral, reference_values=refs, report_data=bytes(64))
    )
    assert bad.reason == "policy.report_data_mismatch"
    # Under --no-collateral reference values can never accept (TCB status and evaluation number unknown).
    nc = FORMAT.verify(quote, _inputs(EMU_NOW, no_collateral=True, reference_values=refs))
    assert nc.reason == "policy.collateral_missing"
    # Without reference values, the emulator root is not trusted at all.
    assert FORMAT.verify(quote, _inputs(EMU_NOW, no_collateral=True)).reason == "evidence.untrusted_root"
