"""Wire schema and subject declarations: strict decoding of arbitrary bytes, bounds, spec validation."""

from __future__ import annotations

import contextlib
import dataclasses

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast import subjects
from contrast.runtime.endpoint import Endpoint
from contrast.wire.v1 import (
    AttestRequest,
    AttestResult,
    DeadLetter,
    ErrorReply,
    ReadinessReply,
    SignedVerdict,
    Verdict,
    decoder,
    encode,
    encode_deterministic,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_raise_decode_errors(data: bytes) -> None:
    for t in (ErrorReply, ReadinessReply, DeadLetter):
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            decoder(t).decode(data)


@settings(max_examples=200, deadline=None)
@given(
    code=st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\.[a-z][a-z0-9_]{0,10}\Z"),
    message=st.text(max_size=1024),
    extra=st.binary(min_size=1, max_size=8),
)
def test_error_reply_roundtrip_and_trailing_bytes(code: str, message: str, extra: bytes) -> None:
    reply = ErrorReply(code=code, message=message, correlation_id="abc")
    data = encode(reply)
    assert decoder(ErrorReply).decode(data) == reply
    with pytest.raises(msgspec.DecodeError):
        decoder(ErrorReply).decode(data + extra)


def test_bounds_and_unknown_fields_are_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        decoder(ErrorReply).decode(msgspec.msgpack.encode({"code": "x" * 200 + ".y", "message": ""}))
    with pytest.raises(msgspec.ValidationError):
        decoder(ErrorReply).decode(msgspec.msgpack.encode({"code": "Not A Code", "message": ""}))
    with pytest.raises(msgspec.ValidationError):
        decoder(ErrorReply).decode(msgspec.msgpack.encode({"code": "a.b", "message": "", "trace": "x"}))


def test_deterministic_encoding_is_stable() -> None:
    a = ReadinessReply(service="s", replica="r", version="1.0.0", ready=True)
    assert encode_deterministic(a) == encode_deterministic(
        msgspec.msgpack.decode(encode(a), type=ReadinessReply)
    )


def test_non_strict_structs_cannot_be_wire_types() -> None:
    class Loose(msgspec.Struct):
        x: int

    with pytest.raises(TypeError):
        decoder(Loose)

    async def handler(req: Loose, ctx: object) -> Loose:
        return req

    with pytest.raises(TypeError):
        Endpoint(name="loose", subject="test.v1.loose", request_type=Loose, handler=handler)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a.b", "a*", ">", "a b", "", "x" * 200])
def test_subject_tokens_are_validated(bad: str) -> None:
    with pytest.raises(ValueError):
        subjects.attest_result(bad)
    with pytest.raises(ValueError):
        subjects.health(bad)


def test_declared_streams_consumers_and_buckets_are_bounded() -> None:
    # the result subject is where the server republishes the request's stored KV `results` entry, and no
    # stream's own subject: only the server publishes there
    assert subjects.RESULTS.subject_prefix == subjects.RESULTS_KV_PREFIX == "$KV.results"
    assert subjects.RESULTS.republish == subjects.ATTEST_RESULT
    assert subjects.attest_result("0123abcd") == f"{subjects.ATTEST_RESULT}.0123abcd"
    assert not subjects.attest_result("0123abcd").startswith("$")
    every = (*subjects.STREAMS, *subjects.source_streams("tenant-a"))
    for stream in every:
        assert not any(s.startswith(subjects.ATTEST_RESULT) for s in stream.subjects)
    for bad in ("$KV.x", "a..b", "a.*", "a.>", "a b"):
        with pytest.raises(ValueError):
            dataclasses.replace(subjects.RESULTS, republish=bad)
    for spec in every:
        assert spec.max_bytes > 0
        assert spec.max_msgs > 0
        assert spec.max_age > 0
    for c in (*subjects.CONSUMERS, *subjects.source_consumers("tenant-a")):
        assert c.stream in every
        assert c.filter_subject in c.stream.subjects
        assert c.stream.retention == "workqueue"
    assert {b.bucket for b in subjects.BUCKETS} >= {"nonces", "results", "history"}
    with pytest.raises(ValueError):
        dataclasses.replace(subjects.VERDICTS, max_bytes=0)
    with pytest.raises(ValueError):
        dataclasses.replace(subjects.VERDICTS, duplicate_window=subjects.VERDICTS.max_age * 2)
    with pytest.raises(ValueError):
        dataclasses.replace(subjects.CA_CONSUMER, durable="a.b")


def test_endpoint_config_is_validated_at_build_time() -> None:
    from tests.runtime.rt_services import Echo

    async def handler(req: Echo, ctx: object) -> Echo:
        return req

    ok = Endpoint(name="e", subject="test.v1.e", request_type=Echo, handler=handler)  # type: ignore[arg-type]
    for change in (
        {"subject": "test.>"},
        {"subject": "test.*.e"},
        {"subject": "test.v1.e.*"},  # literal subjects only
        {"subject": "a..b"},
        {"name": "bad name"},
        {"max_bytes": 0},
        {"timeout": 0},
    ):
        with pytest.raises(ValueError):
            dataclasses.replace(ok, **change)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_wire_decoders_reject_garbage_with_typed_errors(blob: bytes) -> None:
    for t in (AttestRequest, SignedVerdict, AttestResult, Verdict):
        with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
            decoder(t).decode(blob)
