"""Property: whatever YAML a user feeds generate, it either succeeds or refuses with a typed error."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contrast.errors import RequestError
from contrast.generate.generator import Options, process
from contrast.generate.yamldocs import Document, YamlFile
from tests.generate.generate_builders import deployment

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=6), st.just("contrast-cc"))
_value = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_KEYS = [
    ("spec", "template", "spec", "containers"),
    ("spec", "template", "spec", "containers", 0),
    ("spec", "template", "spec", "containers", 0, "env"),
    ("spec", "template", "spec", "containers", 0, "command"),
    ("spec", "template", "spec", "containers", 0, "volumeMounts"),
    ("spec", "template", "spec", "volumes"),
    ("spec", "template", "spec", "initContainers"),
    ("spec", "template", "metadata"),
    ("spec", "template", "metadata", "annotations"),
    ("metadata",),
    ("metadata", "annotations"),
    ("spec", "template"),
    ("spec",),
]


def _has(cur: Any, key: Any) -> bool:
    if isinstance(cur, dict):
        return key in cur
    return isinstance(cur, list) and isinstance(key, int) and key < len(cur)


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    cur = doc
    for key in path[:-1]:
        if not _has(cur, key):
            return
        cur = cur[key]
    if isinstance(cur, dict) or _has(cur, path[-1]):
        cur[path[-1]] = value


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _value), min_size=1, max_size=3))
def test_mutated_workloads_succeed_or_refuse_with_a_typed_error(mutations: list[tuple[Any, Any]]) -> None:
    doc = deployment()
    for path, value in mutations:
        _set(doc, path, copy.deepcopy(value))
    f = YamlFile(path=Path("m.yaml"), documents=[Document(text="", data=doc)])
    try:
        out = process([f], Options(offline=True))
    except RequestError:
        return
    # Success means every confidential workload got a policy hash and an entry.
    assert len(out.policies) <= len(out.workloads) <= 1
    for w in out.workloads:
        assert w.policy_hash in out.policies
