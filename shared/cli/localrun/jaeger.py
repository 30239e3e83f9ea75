"""A local Jaeger (v2, the OpenTelemetry-collector based all-in-one) for ``contrast run --jaeger`` and the
tests: start it on loopback, export to it, read the traces back through its HTTP query API.

Jaeger v2 takes an OpenTelemetry-collector configuration. The one written here has the OTLP/HTTP receiver,
in-memory storage, the query service (HTTP API and UI, gRPC API) and the health check, every port on
127.0.0.1, and no listener of its own telemetry: nothing is reachable from outside this machine, and two runs
(or tests) side by side do not collide. ``make tools`` builds the binary into ``.tools/bin/jaeger``; a build
from the Go module embeds no UI assets (the UI is a separate JavaScript build), so its UI address shows a
placeholder page: :meth:`Jaeger.ui_embedded` tells which, and the HTTP API (``/api/traces``) answers either
way. ``CONTRAST_JAEGER`` names another binary, e.g. an official release that embeds the UI.

The API used is Jaeger's JSON query API: ``/api/services``, ``/api/traces?service=…`` and
``/api/traces/<trace id>``; :func:`parse_trace` turns one trace into :class:`TraceSpan` rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import contrast
from contrast.runtime.natsserver import free_port
from contrast.runtime.tracing import (
    ATTR_POLICY_HASH,
    ATTR_REASON,
    ATTR_ROLE,
    ATTR_TEE,
    ATTR_VERDICT,
)

START_TIMEOUT = 30.0
PLACEHOLDER_MARK = b"This is not the Jaeger UI"
HOST = "127.0.0.1"
DEFAULT_UI_PORT = 16686
# The attributes a rendered tree shows next to each span.
SHOWN_ATTRIBUTES = (ATTR_ROLE, ATTR_TEE, ATTR_POLICY_HASH, ATTR_VERDICT, ATTR_REASON)


def find_jaeger(env: Mapping[str, str] | None = None) -> str | None:
    """``CONTRAST_JAEGER``, else ``$CONTRAST_TOOLS_DIR/bin/jaeger`` or the source tree's ``.tools/bin/jaeger``
    (``make tools``), else ``jaeger`` on ``PATH``."""
    env = os.environ if env is None else env
    named = env.get("CONTRAST_JAEGER", "")
    if named:
        return named if os.access(named, os.X_OK) else None
    tools = env.get("CONTRAST_TOOLS_DIR") or str(Path(contrast.__file__).resolve().parent.parent / ".tools")
    built = Path(tools) / "bin" / "jaeger"
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    return shutil.which("jaeger")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class Ports:
    otlp_http: int
    query_http: int
    query_grpc: int
    health: int

    @classmethod
    def free(cls, query_http: int | None = None) -> Ports:
        return cls(
            otlp_http=free_port(),
            query_http=query_http or free_port(),
            query_grpc=free_port(),
            health=free_port(),
        )


def config_yaml(ports: Ports, *, max_traces: int = 20000) -> str:
    """The collector configuration: OTLP/HTTP in, memory storage, query API/UI, health; loopback only."""
    return f"""\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: {HOST}:{ports.health}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: {HOST}:{ports.query_http}
    grpc:
      endpoint: {HOST}:{ports.query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: {max_traces}
receivers:
  otlp:
    protocols:
      http:
        endpoint: {HOST}:{ports.otlp_http}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"not a loopback Jaeger URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback http, checked above
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Jaeger:
    """A running Jaeger process (see :func:`start`)."""

    process: subprocess.Popen[bytes]
    ports: Ports
    log_path: Path

    @property
    def otlp_endpoint(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter appends ``/v1/traces``)."""
        return f"http://{HOST}:{self.ports.otlp_http}"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.ports.query_http}"

    def trace_url(self, trace_id: str) -> str:
        return f"{self.ui_url}/trace/{trace_id}"

    def api(self, path: str, **params: str | int) -> Any:
        """GET ``/api/<path>`` and return its ``data`` (raises ``RuntimeError`` on an error answer)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = _get(f"{self.ui_url}/api/{path}{query}")
        if status != 200:
            raise RuntimeError(f"jaeger /api/{path}: HTTP {status}: {body[:200]!r}")
        answer = json.loads(body)
        if answer.get("errors"):
            raise RuntimeError(f"jaeger /api/{path}: {answer['errors']}")
        return answer.get("data")

    def services(self) -> list[str]:
        return sorted(self.api("services") or [])

    def traces(self, service: str, *, limit: int = 100, lookback: str = "1h") -> list[dict[str, Any]]:
        """The traces that have a span of ``service`` (each one whole: every service's spans)."""
        found: list[dict[str, Any]] = self.api("traces", service=service, limit=limit, lookback=lookback)
        return found or []

    def trace(self, trace_id: str) -> list[TraceSpan]:
        (raw,) = self.api(f"traces/{trace_id}")
        return parse_trace(raw)

    def ui_embedded(self) -> bool:
        """Whether this binary serves the real UI (False: the placeholder page of a build without it)."""
        status, body = _get(self.ui_url + "/")
        return status == 200 and PLACEHOLDER_MARK not in body

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    binary: str, workdir: Path, *, query_http: int | None = None, timeout: float = START_TIMEOUT
) -> Jaeger:
    """Start Jaeger with :func:`config_yaml` in ``workdir`` (config and log there) and wait until its
    health check and query API answer. Blocking: call it from a thread in async code."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports = Ports.free(query_http)
    config = workdir / "jaeger.yaml"
    config.write_text(config_yaml(ports))
    log_path = workdir / "jaeger.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary, "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the runner only, which stops it
        )
    jaeger = Jaeger(process, ports, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = log_path.read_bytes()[-1500:].decode(errors="replace")
            raise RuntimeError(f"jaeger exited with {process.returncode}: {tail}")
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            status, body = _get(f"http://{HOST}:{ports.health}/status", timeout=1.0)
            if status == 200 and json.loads(body).get("healthy"):
                jaeger.api("services")  # and the query API answers (no data yet: null)
                return jaeger
        if time.monotonic() > deadline:
            jaeger.stop()
            raise RuntimeError(f"jaeger did not become healthy within {timeout:g} s; see {log_path}")
        time.sleep(0.1)


# ---- traces as read back from the query API ----------------------------------------------------------------


@dataclass(frozen=True)
class TraceSpan:
    """One span of a trace as Jaeger stored it: its process (service, replica) and its tags."""

    trace_id: str
    span_id: str
    parent_id: str  # "" for the root
    name: str
    service: str
    replica: str
    kind: str  # server, client, producer, consumer or internal
    start_us: int
    duration_us: int
    tags: Mapping[str, Any]


def parse_trace(raw: Mapping[str, Any]) -> list[TraceSpan]:
    """The spans of one trace of ``/api/traces`` (or ``/api/traces/<id>``), in start order."""
    processes = {
        pid: (p.get("serviceName", ""), {t["key"]: t.get("value") for t in p.get("tags") or []})
        for pid, p in (raw.get("processes") or {}).items()
    }
    out = []
    for s in raw.get("spans") or []:
        service, ptags = processes.get(s.get("processID", ""), ("", {}))
        tags = {t["key"]: t.get("value") for t in s.get("tags") or []}
        parents = [r["spanID"] for r in s.get("references") or [] if r.get("refType") == "CHILD_OF"]
        out.append(
            TraceSpan(
                trace_id=s["traceID"],
                span_id=s["spanID"],
                parent_id=parents[0] if parents else "",
                name=s.get("operationName", ""),
                service=service,
                replica=str(ptags.get("service.instance.id", "")),
                kind=str(tags.get("span.kind", "internal")),
                start_us=int(s.get("startTime", 0)),
                duration_us=int(s.get("duration", 0)),
                tags=tags,
            )
        )
    return sorted(out, key=lambda span: span.start_us)


def render_tree(spans: Sequence[TraceSpan], attributes: Sequence[str] = ()) -> list[str]:
    """A text tree of one trace: service/replica, span name and kind, duration, the given attributes."""
    children: dict[str, list[TraceSpan]] = {}
    ids = {s.span_id for s in spans}
    for s in spans:
        children.setdefault(s.parent_id if s.parent_id in ids else "", []).append(s)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for s in children.get(parent, []):
            extra = " ".join(f"{k}={s.tags[k]}" for k in attributes if k in s.tags)
            lines.append(
                f"{'  ' * depth}{s.service}/{s.replica}  {s.name} ({s.kind}, "
                f"{s.duration_us / 1000:.1f} ms){'  ' + extra if extra else ''}"
            )
            walk(s.span_id, depth + 1)

    walk("", 0)
    return lines
