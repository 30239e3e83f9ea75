"""deploy/prometheus: the recording and alerting rules pass ``promtool check rules``, their unit tests pass
``promtool test rules`` (Debian's prometheus package), every alert has a case that fires and one that must
not, and every rule reads only series the services export or the rules record."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.deploy.promql_names import RULE_TESTS, RULES, exported_series, metric_names, rules, unknown_names
from tests.tooling import require_tool


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_promtool_checks_the_rules() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules())} rules found" in r.stdout


def test_promtool_runs_the_rule_unit_tests() -> None:
    r = promtool("test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_must_not() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for t in tests for case in t.get("alert_rule_test", [])]
    for alert in (r["alert"] for r in rules() if "alert" in r):
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert}: no case where it must stay silent"


def test_rules_read_only_exported_or_recorded_series() -> None:
    for rule in rules():
        assert not unknown_names(rule["expr"]), (rule.get("record") or rule.get("alert"), rule["expr"])
    used = set().union(*(metric_names(r["expr"]) for r in rules()))
    # The signals the issue asks for are all covered.
    for series in (
        "contrast_stream_pending",
        "contrast_attestation_failures_total",
        "contrast_nonce_replays_total",
        "contrast_issuance_seconds_bucket",
        "contrast_collateral_fetch_failures_total",
        "contrast_ready",
    ):
        assert series in used
        assert series in exported_series()


def test_the_name_check_and_promtool_catch_mistakes(tmp_path: Path) -> None:
    """The checks are not vacuous: a misspelt metric, a broken expression and a wrong expectation fail."""
    assert unknown_names('sum by (tee) (rate(contrast_attestation_failure_total{tee="snp"}[5m]))') == {
        "contrast_attestation_failure_total"
    }
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(contrast_issuance_seconds_bucket{le!="x"}[5m]))) > 0.5'
    ) == {"contrast_issuance_seconds_bucket"}
    broken = tmp_path / "broken.yaml"
    broken.write_text(RULES.read_text().replace("> 100", "> > 100"))
    assert promtool("check", "rules", str(broken)).returncode != 0
    shutil.copy(RULES, tmp_path / RULES.name)
    wrong = yaml.safe_load(RULE_TESTS.read_text())
    wrong["tests"][0]["alert_rule_test"][1]["exp_alerts"] = []  # "the backlog alert does not fire"
    (tmp_path / "wrong.test.yaml").write_text(yaml.safe_dump(wrong))
    r = promtool("test", "rules", "wrong.test.yaml", cwd=tmp_path)
    assert r.returncode != 0
    assert "ContrastVerifierBacklog" in r.stdout + r.stderr
