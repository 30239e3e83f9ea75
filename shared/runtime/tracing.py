"""OpenTelemetry tracing: a provider configured from the standard ``OTEL_*`` variables, and the two helpers
that carry the W3C trace context in NATS message headers.

Exporter selection (the SDK's own conventions):

- ``OTEL_TRACES_EXPORTER``: ``otlp`` (default when an OTLP endpoint is configured), ``console`` or ``none``.
  With no endpoint configured and no explicit exporter, nothing is exported, so a dev run does not spam
  connection errors; and since nothing would read them, spans are then not *recorded* either (sampler
  ``parentbased_always_off``): each one still has its trace and span id, for log correlation and for the
  ``traceparent`` header, but costs a fraction of a recorded span on every message. A sampled parent from
  upstream is still honoured. With an exporter, every span is recorded, also under a remote parent that is
  not sampled: an initializer or a CLI that exports nothing (and so marks its context "not sampled") must not
  switch off the Coordinator's own record of its attestation, which keeps the caller's trace id.
  ``OTEL_TRACES_SAMPLER`` overrides either choice as usual.
- ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf`` (default,
  installed) or ``grpc`` (only if ``opentelemetry-exporter-otlp-proto-grpc`` is importable; otherwise a clear
  log line and no exporter).
- Endpoint, headers, timeout and compression are read by the exporter itself (``OTEL_EXPORTER_OTLP_*``), so
  pointing at Jaeger is ``OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318``.

The *current tracer* (:func:`current_tracer`) is the tracer of the service or command the calling code runs
in: :func:`contrast.runtime.serve` sets it for everything the service starts (its handlers, its background
joins), the CLI and the initializer for their command. Library code that makes a request deep down (a join,
a recovery probe) thus lands in its own process's trace without a tracer handed through every call, also
when several services share one process (tests). Outside any, it is the OpenTelemetry global one.

Attestation spans carry the attributes of :func:`annotate_attestation` (TEE, policy-hash prefix, verdict and
reason code), so that a trace can be found by any of them in Jaeger.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Final

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import Span, Tracer

from contrast.runtime.logs import get_logger

_log = get_logger(__name__)
_EMPTY = Context()
_CURRENT: ContextVar[Tracer | None] = ContextVar("contrast_tracer", default=None)

# Span attributes of the attestation flow (verifier, CA, initializer; join and owner commands use the first).
ATTR_ROLE: Final = "contrast.role"
ATTR_TEE: Final = "contrast.tee"
ATTR_POLICY_HASH: Final = "contrast.policy_hash_prefix"
ATTR_VERDICT: Final = "contrast.verdict"
ATTR_REASON: Final = "contrast.reason"
ATTR_REQUEST_ID: Final = "contrast.request_id"
POLICY_HASH_PREFIX_BYTES: Final = 8  # 16 hex digits: enough to tell policies apart, short in a UI column


def current_tracer() -> Tracer:
    """The tracer of the service or command this code runs in (see the module docstring)."""
    return _CURRENT.get() or trace.get_tracer("contrast")


@contextlib.contextmanager
def use_tracer(tracer: Tracer) -> Iterator[None]:
    """Make ``tracer`` the current one for this block and for every task started inside it."""
    token = _CURRENT.set(tracer)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def annotate_attestation(
    span: Span | None = None,
    *,
    tee: str = "",
    policy_hash: bytes = b"",
    verdict: str = "",
    reason: str = "",
    request_id: str = "",
) -> None:
    """Set the attestation attributes that are given on ``span`` (default: the current span).

    The policy hash goes in as its first :data:`POLICY_HASH_PREFIX_BYTES` bytes in hex. Nothing is computed
    for a span that is not recorded (no exporter configured).
    """
    span = span or trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, str] = {}
    if tee:
        attributes[ATTR_TEE] = tee
    if policy_hash:
        attributes[ATTR_POLICY_HASH] = policy_hash[:POLICY_HASH_PREFIX_BYTES].hex()
    if verdict:
        attributes[ATTR_VERDICT] = verdict
    if reason:
        attributes[ATTR_REASON] = reason
    if request_id:
        attributes[ATTR_REQUEST_ID] = request_id
    span.set_attributes(attributes)


def inject(headers: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Add the current trace context (``traceparent``/``tracestate``) to ``headers`` and return them."""
    out: dict[str, str] = dict(headers or {})
    propagate.inject(out)
    return out


def extract(headers: Mapping[str, str] | None) -> Context:
    """Read the trace context from NATS message headers (missing or malformed headers give a new root)."""
    if not headers or propagate.get_global_textmap().fields.isdisjoint(headers):
        return _EMPTY  # what the propagators would return, without their per-message work
    return propagate.extract(dict(headers))


def _otlp_exporter(protocol: str, env: Mapping[str, str]) -> SpanExporter | None:
    # The exporters read os.environ themselves; the endpoint is passed explicitly so that an ``env`` given to
    # exporters_from_env (tests, embedded runs) is honoured the same way.
    signal_endpoint, base = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    if protocol == "grpc":
        try:
            module = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError:
            _log.error(
                "otel_grpc_unavailable",
                detail="OTLP/gRPC requested but opentelemetry-exporter-otlp-proto-grpc is not installed; "
                "spans are not exported (use OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)",
            )
            return None
        exporter: SpanExporter = module.OTLPSpanExporter(endpoint=signal_endpoint or base)
        return exporter
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = signal_endpoint or (f"{base.rstrip('/')}/v1/traces" if base else None)
        return OTLPSpanExporter(endpoint=endpoint)
    _log.error("otel_protocol_unsupported", protocol=protocol, detail="spans are not exported")
    return None


def exporters_from_env(env: Mapping[str, str] | None = None) -> list[SpanExporter]:
    """Build the span exporters that the standard ``OTEL_*`` variables ask for."""
    env = os.environ if env is None else env
    has_endpoint = bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    names = env.get("OTEL_TRACES_EXPORTER", "otlp" if has_endpoint else "none")
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name == "none":
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporter = _otlp_exporter(protocol, env)
            if exporter is not None:
                exporters.append(exporter)
        else:
            _log.error("otel_exporter_unsupported", exporter=name, detail="spans are not exported to it")
    return exporters


def build_tracer_provider(
    service: str,
    replica: str,
    version: str = "",
    *,
    processors: Sequence[SpanProcessor] = (),
    env: Mapping[str, str] | None = None,
) -> TracerProvider:
    """A provider with ``service.name``/``service.instance.id`` and the exporters from the environment.

    ``processors`` adds extra span processors (tests pass ``SimpleSpanProcessor(InMemorySpanExporter())``).
    ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` are honoured by ``Resource.create``.
    """
    env = os.environ if env is None else env
    attributes = {"service.name": f"contrast-{service}", "service.instance.id": replica}
    if version:
        attributes["service.version"] = version
    exporters = exporters_from_env(env)
    sampler: Sampler | None = None  # None: OTEL_TRACES_SAMPLER, read by the SDK
    if not env.get("OTEL_TRACES_SAMPLER"):
        if exporters or processors:
            sampler = ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON)
        else:
            sampler = ParentBased(ALWAYS_OFF)
    provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider
