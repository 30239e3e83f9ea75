"""Reading span trees back from a real Jaeger in tests: a started Jaeger per test module or test, and the
questions the tests ask of a trace (which span, whose child, which attributes)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from contrast.cli.localrun import jaeger
from contrast.cli.localrun.jaeger import Jaeger, TraceSpan
from tests.tooling import require_tool

ATTACH_TIMEOUT = 30.0  # seconds for exported spans to be queryable (they are flushed when a process stops)


@contextlib.contextmanager
def started_jaeger(workdir: Path) -> Iterator[Jaeger]:
    """The pinned Jaeger of ``make tools``, on loopback free ports."""
    j = jaeger.start(require_tool("jaeger"), workdir)
    try:
        yield j
    finally:
        j.stop()


def wait_for(
    what: str, probe: Callable[[], list[list[TraceSpan]]], done: Callable[[list[list[TraceSpan]]], bool]
) -> list[list[TraceSpan]]:
    """Poll Jaeger until ``done(probe())`` (spans arrive in the collector's batches), bounded."""
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while True:
        found = probe()
        if done(found):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not in Jaeger after {ATTACH_TIMEOUT} s; found {len(found)} trace(s)")
        time.sleep(0.2)


def traces_of(j: Jaeger, service: str) -> list[list[TraceSpan]]:
    return [jaeger.parse_trace(t) for t in j.traces(service, limit=500)]


def command_trace(j: Jaeger, name: str, *, min_spans: int = 1) -> list[TraceSpan]:
    """The one trace of the owner command ``name`` (its root span, e.g. ``contrast set``), once it has at
    least ``min_spans`` spans (the manifest service's arrive when that replica flushes)."""

    def found(traces: list[list[TraceSpan]]) -> bool:
        return any(root(t).name == name and len(t) >= min_spans for t in traces)

    traces = wait_for(name, lambda: traces_of(j, "contrast-cli"), found)
    (spans,) = [t for t in traces if root(t).name == name]
    return spans


def every(
    spans: Sequence[TraceSpan], tags: Mapping[str, Any] | None = None, **fields: Any
) -> list[TraceSpan]:
    """The spans with these field values (``name=``, ``service=``, ``kind=``, ...) and these tags."""
    return [
        s
        for s in spans
        if all(getattr(s, k) == v for k, v in fields.items())
        and all(s.tags.get(k) == v for k, v in (tags or {}).items())
    ]


def one(spans: Sequence[TraceSpan], tags: Mapping[str, Any] | None = None, **fields: Any) -> TraceSpan:
    """The single span that :func:`every` finds."""
    found = every(spans, tags, **fields)
    assert len(found) == 1, f"expected one span {fields} {tags or ''}, found {len(found)}: " + "; ".join(
        jaeger.render_tree(spans)
    )
    return found[0]


def child_of(child: TraceSpan, parent: TraceSpan) -> bool:
    return child.trace_id == parent.trace_id and child.parent_id == parent.span_id


def root(spans: Sequence[TraceSpan]) -> TraceSpan:
    (r,) = [s for s in spans if not s.parent_id]
    return r


def has_error(span: TraceSpan) -> bool:
    return span.tags.get("error") is True or span.tags.get("otel.status_code") == "ERROR"
