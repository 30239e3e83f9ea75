"""What the Prometheus rules and the Grafana dashboard may refer to: the series the services export (from the
one declaration of every metric, :class:`contrast.runtime.metrics.Metrics`) and the series the rules record;
and the metric names a PromQL expression uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from contrast.runtime.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "contrast-rules.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "contrast-rules.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "contrast-dashboard.json"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}
)
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exported_series() -> set[str]:
    """Every series name a Contrast replica can expose on ``/metrics``."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def recorded_series() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def metric_names(expr: str) -> set[str]:
    """The metric (series) names an expression selects: identifiers that are not functions, keywords,
    label names (in matchers, ``by``/``on`` lists) or durations."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in _IDENT.finditer(e):
        if e[m.end() :].lstrip().startswith("(") or m.group(0).lower() in _KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def unknown_names(expr: str) -> set[str]:
    return metric_names(expr) - exported_series() - recorded_series()
