"""deploy/grafana: the dashboard is well-formed Grafana JSON whose every query reads only series that the
services export or the Prometheus rules record, and that shows each alerted signal."""

from __future__ import annotations

import json
from typing import Any

from tests.deploy.promql_names import DASHBOARD, metric_names, recorded_series, unknown_names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_shape() -> None:
    d = dashboard()
    assert d["uid"] == "contrast-coordinator"
    assert d["title"]
    assert [v["name"] for v in d["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["type"] in {"timeseries", "stat"}
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"])
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))


def test_every_query_reads_exported_or_recorded_series() -> None:
    for expr in expressions():
        assert metric_names(expr), expr
        assert not unknown_names(expr), expr


def test_the_dashboard_shows_every_recorded_signal() -> None:
    used = set().union(*(metric_names(e) for e in expressions()))
    assert recorded_series() <= used, recorded_series() - used
