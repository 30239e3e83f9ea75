"""Tracing: one trace across services (in-memory exporter) and a real OTLP/HTTP export (local receiver)."""

from __future__ import annotations

import io
import itertools
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import structlog
from nats.aio.client import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contrast.runtime import RuntimeConfig, configure_logging, request, serve
from contrast.runtime.tracing import build_tracer_provider, exporters_from_env, extract, inject
from tests.runtime.rt_services import ECHO, ECHO_SERVICE, FRONT, FRONT_SERVICE, Echo, EchoReply


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    return build_tracer_provider("test", "r0", processors=[SimpleSpanProcessor(exporter)], env={})


async def test_request_across_two_services_is_one_trace(
    nats_url: str, nc: Client, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    cfg = RuntimeConfig(nats_urls=(nats_url,), replica="t")
    async with (
        serve(ECHO_SERVICE, cfg, tracer_provider=provider),
        serve(FRONT_SERVICE, cfg, tracer_provider=provider),
    ):
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("user-call") as root:
            reply = await request(nc, FRONT, Echo(text="t"), EchoReply, tracer=tracer)
        assert reply.text == "front:t"
    spans = {
        (s.name, s.kind): s for s in exporter.get_finished_spans() if s.name != "contrast.v1.health.echo"
    }
    trace_id = root.get_span_context().trace_id
    chain = [
        ("user-call", SpanKind.INTERNAL),
        (FRONT, SpanKind.CLIENT),
        (FRONT, SpanKind.SERVER),
        (ECHO, SpanKind.CLIENT),
        (ECHO, SpanKind.SERVER),
    ]
    for parent_key, child_key in itertools.pairwise(chain):
        parent, child = spans[parent_key], spans[child_key]
        assert child.context.trace_id == trace_id
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id, (parent_key, child_key)
    assert spans[(ECHO, SpanKind.SERVER)].parent.is_remote  # type: ignore[union-attr]
    assert spans[(ECHO, SpanKind.SERVER)].resource.attributes["service.name"] == "contrast-test"


def test_inject_extract_roundtrip(provider: TracerProvider) -> None:
    with provider.get_tracer("t").start_as_current_span("s") as span:
        headers = inject({"Nats-Msg-Id": "x"})
    assert headers["Nats-Msg-Id"] == "x"
    assert headers["traceparent"].startswith("00-")
    ctx = extract(headers)
    from opentelemetry import trace

    assert trace.get_current_span(ctx).get_span_context().trace_id == span.get_span_context().trace_id
    assert not trace.get_current_span(extract({"traceparent": "garbage"})).get_span_context().is_valid
    assert not trace.get_current_span(extract(None)).get_span_context().is_valid


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    _Receiver.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", _Receiver.bodies
    finally:
        server.shutdown()
        server.server_close()


def test_spans_are_exported_over_otlp_http(otlp_receiver: tuple[str, list[tuple[str, bytes]]]) -> None:
    url, bodies = otlp_receiver
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": url}  # the standard variable; the exporter adds /v1/traces
    provider = build_tracer_provider("verifier", "r7", "1.2.3", env=env)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent") as parent, tracer.start_as_current_span("child"):
        pass
    assert provider.force_flush(5000)
    provider.shutdown()
    assert bodies
    assert all(path == "/v1/traces" for path, _ in bodies)
    spans = []
    for _, body in bodies:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            assert attrs["service.name"] == "contrast-verifier"
            assert attrs["service.instance.id"] == "r7"
            spans += [s for ss in rs.scope_spans for s in ss.spans]
    by_name = {s.name: s for s in spans}
    assert by_name["child"].parent_span_id == parent.get_span_context().span_id.to_bytes(8, "big")
    assert by_name["child"].trace_id == by_name["parent"].trace_id


def test_exporter_selection_from_env() -> None:
    assert exporters_from_env({}) == []  # nothing configured: no export, no connection errors
    assert (
        exporters_from_env({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) == []
    )
    (console,) = exporters_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert type(console).__name__ == "ConsoleSpanExporter"
    (http,) = exporters_from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"})
    assert type(http).__module__.startswith("opentelemetry.exporter.otlp.proto.http")
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401

        has_grpc = True
    except ImportError:
        has_grpc = False
    grpc = exporters_from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    assert len(grpc) == (1 if has_grpc else 0)


def test_logs_are_json_with_trace_ids(provider: TracerProvider) -> None:
    stream = io.StringIO()
    configure_logging("verifier", "r9", stream=stream)
    try:
        with provider.get_tracer("t").start_as_current_span("s") as span:
            structlog.stdlib.get_logger("x").info("hello", k=1)
            logging.getLogger("nats.aio.client").warning("from nats-py")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)
        structlog.reset_defaults()
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert [line["event"] for line in lines] == ["hello", "from nats-py"]
    for line in lines:
        assert line["trace_id"] == trace_id
        assert len(line["span_id"]) == 16
        assert line["service"] == "verifier"
        assert line["replica"] == "r9"
    assert lines[1]["logger"] == "nats.aio.client"
    assert lines[1]["level"] == "warning"


def test_without_any_span_consumer_spans_carry_ids_but_are_not_recorded() -> None:
    provider = build_tracer_provider("verifier", "r1", env={})  # no exporter, no processor
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root") as root, tracer.start_as_current_span("child") as child:
        assert not root.is_recording()
        assert not child.is_recording()
        ctx = child.get_span_context()
        assert ctx.is_valid
        assert ctx.trace_id == root.get_span_context().trace_id
        headers = inject()
    assert headers["traceparent"].startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    # A sampled parent from upstream is still honoured: its trace stays whole.
    sampled = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}
    with tracer.start_as_current_span("consumer", context=extract(sampled)) as span:
        assert span.is_recording()
        assert span.get_span_context().trace_id == int("ab" * 16, 16)


def test_an_explicit_sampler_or_a_span_consumer_records_spans(exporter: InMemorySpanExporter) -> None:
    with_processor = build_tracer_provider("ca", "r1", processors=[SimpleSpanProcessor(exporter)], env={})
    with with_processor.get_tracer("t").start_as_current_span("s") as span:
        assert span.is_recording()
    assert [s.name for s in exporter.get_finished_spans()] == ["s"]
    explicit = build_tracer_provider("ca", "r1", env={"OTEL_TRACES_SAMPLER": "always_on"})
    with explicit.get_tracer("t").start_as_current_span("s") as span:
        assert span.is_recording()
