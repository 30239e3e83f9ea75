"""The attributes and links of the attestation, join and rejection spans (in-memory exporter; the whole tree
across real processes and a real Jaeger is tests/e2e/test_run_traces_jaeger.py)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contrast import subjects
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.initializer.client import AttestationFailed
from contrast.runtime.natsserver import NatsServer
from contrast.runtime.tracing import (
    ATTR_POLICY_HASH,
    ATTR_REASON,
    ATTR_REQUEST_ID,
    ATTR_ROLE,
    ATTR_TEE,
    ATTR_VERDICT,
    annotate_attestation,
    build_tracer_provider,
    extract,
)
from tests.services.ops_deployment import deployment
from tests.services.pipeline import H_DB, H_UNKNOWN


def _in(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context.trace_id == trace_id]


def _one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name and s.kind == kind]
    return span


def _parent(span: ReadableSpan) -> int:
    assert span.parent is not None, span.name
    return span.parent.span_id


async def test_accepted_rejected_and_join_spans_carry_their_attributes(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    exporter = InMemorySpanExporter()
    provider = build_tracer_provider("test", "t", processors=[SimpleSpanProcessor(exporter)], env={})
    async with deployment(private_nats.url, snp_emulator, verifiers=1, tracer_provider=provider) as d:
        creds = await d.initializer(H_DB).attest()
        with pytest.raises(AttestationFailed) as failed:
            await d.initializer(H_UNKNOWN, deadline=2.0).attest()
    assert failed.value.last.code == "policy.policy_unknown"
    spans = list(exporter.get_finished_spans())

    # Accepted: initializer (root) → verifier → CA, the verdict on each, the policy-hash prefix throughout.
    (attest,) = [
        s for s in spans if s.name == "attest" and s.attributes.get(ATTR_REQUEST_ID) == creds.request_id
    ]
    trace = _in(spans, attest.context.trace_id)
    prefix = H_DB[:8].hex()
    assert attest.parent is None
    expected = {
        ATTR_TEE: "snp",
        ATTR_POLICY_HASH: prefix,
        ATTR_VERDICT: "issued",
    }
    assert expected.items() <= dict(attest.attributes or {}).items()
    verify = _one(trace, subjects.ATTEST_REQUESTED, SpanKind.CONSUMER)
    issue = _one(trace, subjects.ATTEST_VERIFIED, SpanKind.CONSUMER)
    publish = _one(trace, subjects.ATTEST_REQUESTED, SpanKind.PRODUCER)
    assert _parent(verify) == publish.context.span_id
    assert _parent(issue) == verify.context.span_id
    for span, verdict in ((verify, "accepted"), (issue, "issued")):
        attrs = dict(span.attributes or {})
        assert attrs[ATTR_VERDICT] == verdict
        assert (attrs[ATTR_TEE], attrs[ATTR_POLICY_HASH]) == ("snp", prefix)
        assert attrs[ATTR_REQUEST_ID] == creds.request_id
        assert ATTR_REASON not in attrs

    # Rejected: a signed negative verdict is a normal result, with its reason code on the verifier's span,
    # on the initializer's result span and on the attestation's root.
    roots = [s for s in spans if s.name == "attest" and s is not attest]
    (rejected_root,) = roots
    expected = {
        ATTR_VERDICT: "rejected",
        ATTR_REASON: "policy.policy_unknown",
        ATTR_POLICY_HASH: H_UNKNOWN[:8].hex(),
    }
    assert expected.items() <= dict(rejected_root.attributes or {}).items()
    rejected = _in(spans, rejected_root.context.trace_id)
    verifies = [s for s in rejected if s.name == subjects.ATTEST_REQUESTED and s.kind == SpanKind.CONSUMER]
    results = [s for s in rejected if s.name == "result"]
    assert verifies
    assert results
    for span in verifies + results:
        attrs = dict(span.attributes or {})
        assert (attrs[ATTR_VERDICT], attrs[ATTR_REASON]) == ("rejected", "policy.policy_unknown")
    for span in verifies:
        assert span.status.is_ok  # a rejection is a result, not a fault of the verifier
    assert not [s for s in rejected if s.name == subjects.ATTEST_VERIFIED]  # nothing reached the CA

    # Joins: each replica's join is a span of its own trace that the manifest service's endpoints continue.
    joins = [s for s in spans if s.name == "join"]
    assert sorted(dict(j.attributes or {})[ATTR_ROLE] for j in joins) == ["ca", "verifier"]
    for join in joins:
        trace = _in(spans, join.context.trace_id)
        asked = [
            s
            for s in trace
            if s.kind == SpanKind.CLIENT and s.parent and s.parent.span_id == join.context.span_id
        ]
        assert {s.name for s in asked} == {subjects.COORDINATOR_JOIN_NONCE, subjects.COORDINATOR_JOIN}
        for ask in asked:
            (answer,) = [
                s
                for s in trace
                if s.kind == SpanKind.SERVER and s.parent and s.parent.span_id == ask.context.span_id
            ]
            assert answer.name == ask.name
            assert answer.status.is_ok


def test_attributes_cost_nothing_on_spans_that_are_not_recorded() -> None:
    provider = build_tracer_provider("verifier", "r1", env={})  # no exporter: spans are not recorded
    with provider.get_tracer("t").start_as_current_span("s") as span:
        annotate_attestation(tee="snp", policy_hash=b"\x01" * 32, verdict="accepted")
        assert not span.is_recording()
    exporter = InMemorySpanExporter()
    recording = build_tracer_provider("verifier", "r1", processors=[SimpleSpanProcessor(exporter)], env={})
    with recording.get_tracer("t").start_as_current_span("s"):
        annotate_attestation(tee="tdx", policy_hash=bytes(range(32)), reason="evidence.bad_signature")
    (done,) = exporter.get_finished_spans()
    assert dict(done.attributes or {}) == {
        ATTR_TEE: "tdx",
        ATTR_POLICY_HASH: "0001020304050607",
        ATTR_REASON: "evidence.bad_signature",
    }


def test_an_unsampled_caller_does_not_switch_off_an_exporting_service() -> None:
    """An initializer without an exporter sends ``traceparent`` with the sampled flag off; a verifier that
    exports still records its span (in the caller's trace), instead of dropping every attestation's."""
    unsampled = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-00"}
    exporter = InMemorySpanExporter()
    exporting = build_tracer_provider("verifier", "r1", processors=[SimpleSpanProcessor(exporter)], env={})
    with exporting.get_tracer("t").start_as_current_span("verify", context=extract(unsampled)) as span:
        assert span.is_recording()
    (done,) = exporter.get_finished_spans()
    assert done.context.trace_id == int("ab" * 16, 16)
    silent = build_tracer_provider("verifier", "r1", env={})  # exports nothing: records nothing
    with silent.get_tracer("t").start_as_current_span("verify", context=extract(unsampled)) as span:
        assert not span.is_recording()
