"""Bounded streams on a real server: a flood cannot exhaust storage or starve other sources' work.

Every stream and bucket declared in :mod:`contrast.subjects` reaches the server with all its bounds (messages,
bytes, age, message size, discard policy, the per-source bound of ATTEST, and each source's own nonce stream).
Then a copy of ATTEST with small bounds shows what the bounds do: a full stream refuses new requests and keeps
the accepted ones (discard "new"), oversize and over-budget messages are refused, old ones age out, and a
source that floods its own subject is refused there while another source still gets in. The control without
the per-source bound is the flood that would starve the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import replace

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DiscardPolicy
from nats.js.errors import APIError

from contrast import subjects
from contrast.runtime.jetstream import ensure_kv, ensure_stream
from contrast.runtime.natsserver import embedded_nats
from contrast.subjects import StreamSpec

ATTEST_A = subjects.attest_stream("tenant-a")


def private(spec: StreamSpec, **bounds: object) -> StreamSpec:
    """``spec`` under a fresh name and subject space (the session's server holds the real ones)."""
    token = uuid.uuid4().hex[:12]
    return replace(spec, name=f"B{token}", subjects=(f"bounds.{token}.*",), **bounds)  # type: ignore[arg-type]


def subject_of(spec: StreamSpec, source: str) -> str:
    return spec.subjects[0].replace("*", source)


async def publish(nc: Client, spec: StreamSpec, source: str, data: bytes = b"request") -> str | None:
    """None when the server stored the message, else its refusal."""
    try:
        await nc.jetstream().publish(
            subject_of(spec, source), data, headers={"Nats-Msg-Id": uuid.uuid4().hex}
        )
    except APIError as e:
        return str(e.description)
    return None


async def stored(nc: Client, spec: StreamSpec) -> tuple[int, int, int]:
    """Messages, bytes and first sequence number held by the stream."""
    state = (await nc.jetstream().stream_info(spec.name)).state
    return state.messages, state.bytes, state.first_seq


@pytest.mark.parametrize(
    "spec", [*subjects.STREAMS, *subjects.source_streams("tenant-a")], ids=lambda s: s.name
)
async def test_every_stream_reaches_the_server_with_all_its_bounds(nc: Client, spec: StreamSpec) -> None:
    copy = private(spec)
    await ensure_stream(nc.jetstream(), copy)
    config = (await nc.jetstream().stream_info(copy.name)).config
    assert (config.max_msgs, config.max_bytes, config.max_msg_size) == (
        spec.max_msgs,
        spec.max_bytes,
        spec.max_msg_size,
    )
    assert config.max_age == pytest.approx(spec.max_age)
    assert config.duplicate_window == pytest.approx(spec.duplicate_window)
    assert config.discard == (DiscardPolicy.NEW if spec.discard == "new" else DiscardPolicy.OLD)
    if spec.max_msgs_per_subject:
        assert config.max_msgs_per_subject == spec.max_msgs_per_subject
        assert config.discard_new_per_subject is True
    else:
        assert config.max_msgs_per_subject == -1
    await nc.jetstream().delete_stream(copy.name)


@pytest.mark.parametrize("spec", subjects.BUCKETS, ids=lambda s: s.bucket)
async def test_every_bucket_reaches_the_server_bounded(nc: Client, spec: subjects.KVSpec) -> None:
    token = uuid.uuid4().hex[:12]
    copy = replace(spec, bucket=f"b{token}", republish=f"bounds.{token}" if spec.republish else "")
    await ensure_kv(nc.jetstream(), copy)
    config = (await nc.jetstream().stream_info(f"KV_{copy.bucket}")).config
    assert (config.max_bytes, config.max_msg_size, config.max_msgs_per_subject) == (
        spec.max_bytes,
        spec.max_value_size,
        spec.history,
    )
    assert config.max_age == pytest.approx(spec.ttl)
    if spec.republish:
        assert config.republish is not None
        assert (config.republish.src, config.republish.dest) == (f"$KV.b{token}.>", f"bounds.{token}.>")
    else:
        assert config.republish is None
    await nc.jetstream().delete_stream(f"KV_{copy.bucket}")


@pytest.mark.parametrize("kind", ["nonce", "attest"])
def test_each_source_has_bounded_streams_and_consumers_of_its_own(kind: str) -> None:
    stream_of = subjects.nonce_stream if kind == "nonce" else subjects.attest_stream
    consumer_of = subjects.nonce_consumer if kind == "nonce" else subjects.verifier_consumer
    subject_of_ = subjects.attest_nonce if kind == "nonce" else subjects.attest_requested
    share = subjects.NONCE_SHARE if kind == "nonce" else subjects.ATTEST_SHARE
    a, b = (stream_of(s) for s in ("tenant-a", "tenant-b"))
    assert a.name != b.name
    assert set(a.subjects).isdisjoint(b.subjects)
    assert a.subjects == (subject_of_("tenant-a"),)  # its own subject only: no wildcard
    assert a.discard == "new"
    assert a.retention == "workqueue"
    assert a.max_msgs == a.max_msgs_per_subject == share
    consumers = [consumer_of(s) for s in ("tenant-a", "tenant-b")]
    assert [c.stream for c in consumers] == [a, b]
    assert consumers[0].filter_subject == a.subjects[0]
    assert consumers[0].durable != consumers[1].durable  # a backlog metric per source
    assert set(subjects.source_streams("tenant-a")) >= {a}
    assert set(subjects.source_consumers("tenant-a")) >= {consumers[0]}


def test_nonce_streams_refuse_by_count_and_sources_are_validated() -> None:
    a = subjects.nonce_stream("tenant-a")
    assert a.max_msgs * a.max_msg_size <= a.max_bytes  # refused by count, never by bytes first
    assert subjects.parse_sources("tenant-b, tenant-a,tenant-b") == ("initializer", "tenant-b", "tenant-a")
    for bad in ("a.b", "a*", "x" * 200, ",".join(f"s{i}" for i in range(subjects.MAX_SOURCES))):
        with pytest.raises(ValueError):
            subjects.parse_sources(bad)


def test_a_nonce_request_outlives_the_initializers_wait_but_not_much_more() -> None:
    # Worth answering while its pod still waits (nonce_timeout, 1 s); then it has asked again.
    stream, consumer = subjects.nonce_stream("tenant-a"), subjects.nonce_consumer("tenant-a")
    assert 1.0 < stream.max_age <= 5.0
    assert consumer.ack_wait >= stream.max_age
    assert not consumer.dead_letters


async def test_a_full_stream_refuses_new_requests_and_keeps_the_accepted_ones(nc: Client) -> None:
    spec = private(ATTEST_A, max_msgs=5, max_msgs_per_subject=5)
    await ensure_stream(nc.jetstream(), spec)
    for i in range(5):
        assert await publish(nc, spec, f"s{i}") is None
    assert await publish(nc, spec, "late") is not None
    messages, _, first = await stored(nc, spec)
    assert (messages, first) == (5, 1)  # the first accepted request is still there
    # Control: discard "old" would have made room by dropping accepted work.
    old = private(subjects.EVENTS, max_msgs=5)
    await ensure_stream(nc.jetstream(), old)
    for i in range(6):
        assert await publish(nc, old, f"s{i}") is None
    assert (await stored(nc, old))[0::2] == (5, 2)
    for s in (spec, old):
        await nc.jetstream().delete_stream(s.name)


async def test_oversize_and_over_budget_messages_are_refused(nc: Client) -> None:
    spec = private(ATTEST_A, max_msg_size=1024, max_bytes=8 * 1024)
    await ensure_stream(nc.jetstream(), spec)
    assert await publish(nc, spec, "a", b"x" * 2048) is not None
    assert (await stored(nc, spec))[0] == 0
    refused = [await publish(nc, spec, f"s{i}", b"x" * 800) for i in range(12)]  # with subject and headers
    assert refused[0] is None
    assert refused[-1] is not None
    assert (await stored(nc, spec))[1] <= 8 * 1024
    await nc.jetstream().delete_stream(spec.name)


async def test_requests_older_than_max_age_are_gone(nc: Client) -> None:
    spec = private(ATTEST_A, max_age=1.0, duplicate_window=0.5)
    await ensure_stream(nc.jetstream(), spec)
    assert await publish(nc, spec, "a") is None
    assert (await stored(nc, spec))[0] == 1
    for _ in range(60):  # the server expires on its own timer: wait for the event, bounded
        if (await stored(nc, spec))[0] == 0:
            break
        await asyncio.sleep(0.1)
    assert (await stored(nc, spec))[0] == 0
    await nc.jetstream().delete_stream(spec.name)


@pytest.mark.parametrize(
    "own_stream", [True, False], ids=["a stream per source", "control: one stream, no per-source bound"]
)
async def test_a_flooding_source_fills_only_its_own_stream(nc: Client, own_stream: bool) -> None:
    token = uuid.uuid4().hex[:12]
    if own_stream:
        streams = {
            source: replace(
                ATTEST_A,
                name=f"B{token}{source}",
                subjects=(f"bounds.{token}.{source}",),
                max_msgs=4,
                max_msgs_per_subject=4,
            )
            for source in ("mallory", "tenant-a")
        }
    else:
        shared = private(ATTEST_A, max_msgs=10, max_msgs_per_subject=0)
        streams = {"mallory": shared, "tenant-a": shared}
    for spec in set(streams.values()):
        await ensure_stream(nc.jetstream(), spec)
    flood = [await publish(nc, streams["mallory"], "mallory") for _ in range(10)]
    tenant = await publish(nc, streams["tenant-a"], "tenant-a")
    if own_stream:
        assert flood[:4] == [None] * 4
        assert all(r is not None for r in flood[4:])
        assert tenant is None  # the other source still gets in
    else:
        assert flood == [None] * 10
        assert tenant is not None  # the flood filled the stream: the tenant is starved
    for spec in set(streams.values()):
        await nc.jetstream().delete_stream(spec.name)


# The server's queue of publishes waiting for a stream (100,000 by default); small here, so that one burst of
# the flood overruns it.
INGEST_LIMIT = "jetstream { max_buffered_msgs: 200 }\n"
BURST = 1000
TENANT_REQUESTS = 16


@pytest.mark.parametrize("kind", ["nonce", "attest"])
@pytest.mark.parametrize(
    "own_stream", [True, False], ids=["a stream per source", "control: one shared stream"]
)
async def test_a_full_speed_flood_fills_only_its_own_sources_intake(kind: str, own_stream: bool) -> None:
    """The server queues every publish to a stream in that stream's ingest queue before it can refuse it, and
    refuses (429) or drops publishes once the queue is full. A source flooding its own nonce or attestation
    stream at full speed fills only that stream's queue: another source's requests are all stored. With one
    stream for every source (the control, this project's earlier design), they are refused with the flood.

    Each of the other source's requests is sent right behind a burst of the flood on the same connection, so
    that it reaches the server behind the burst whatever the machine's load: what decides is only whether
    it waits in the same queue."""
    stream_of = subjects.nonce_stream if kind == "nonce" else subjects.attest_stream
    subject_of_ = subjects.attest_nonce if kind == "nonce" else subjects.attest_requested
    payload = b"x" if kind == "nonce" else b"x" * 1024
    with embedded_nats(authorization=INGEST_LIMIT) as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            # Room for all the tenant's requests (no verifier drains the streams here).
            room = {"max_msgs": 64, "max_msgs_per_subject": 64, "max_age": 600.0}
            if own_stream:
                names = {source: stream_of(source).name for source in ("mallory", "tenant-a")}
                for source in names:
                    await ensure_stream(js, replace(stream_of(source), **room))  # type: ignore[arg-type]
            else:
                shared = replace(
                    stream_of("tenant-a"),
                    name="SHARED",
                    subjects=(f"{subject_of_('tenant-a').rsplit('.', 1)[0]}.*",),
                    max_msgs=100_000,
                    max_bytes=1 * subjects.GiB,
                    max_age=600.0,
                    max_msgs_per_subject=64,
                )
                names = {"mallory": shared.name, "tenant-a": shared.name}
                await ensure_stream(js, shared)
            stored = 0
            for _ in range(TENANT_REQUESTS):
                # Reply subjects nobody listens on, as a flooder that does not wait for the refusals.
                for _ in range(BURST):
                    await nc.publish(subject_of_("mallory"), payload, reply="_INBOX.mallory.x")
                # Refused with 429 "too many requests" while the queue is full, or dropped unanswered.
                with contextlib.suppress(nats.errors.TimeoutError, APIError):
                    await js.publish(subject_of_("tenant-a"), b"request", timeout=1.0)
                    stored += 1
        finally:
            await nc.close()
        assert server.log_path is not None
        log = server.log_path.read_text(errors="replace")
        dropped = [line for line in log.splitlines() if "excessive stream ingest rate" in line]
    if own_stream:
        assert stored == TENANT_REQUESTS
        assert not any(f"'{names['tenant-a']}'" in line for line in dropped)
    else:
        assert any(f"'{names['mallory']}'" in line for line in dropped)  # the flood overran the shared queue
        assert stored < TENANT_REQUESTS


async def test_a_stream_of_an_older_version_that_takes_the_subjects_is_named_at_start(nc: Client) -> None:
    """The one ATTEST stream of an older version took every source's subjects: the new per-source stream
    cannot be created beside it, and the replica says which subjects and what to do instead of retrying."""
    token = uuid.uuid4().hex[:12]
    old = replace(ATTEST_A, name=f"OLD{token}", subjects=(f"bounds.{token}.*",), max_msgs_per_subject=0)
    await ensure_stream(nc.jetstream(), old)
    new = replace(ATTEST_A, name=f"NEW{token}", subjects=(f"bounds.{token}.tenant-a",))
    try:
        with pytest.raises(RuntimeError, match="another stream already takes its subjects"):
            await ensure_stream(nc.jetstream(), new)
        # Control: once the old stream is gone, the new one is created.
        await nc.jetstream().delete_stream(old.name)
        await ensure_stream(nc.jetstream(), new)
        assert (await nc.jetstream().stream_info(new.name)).config.subjects == list(new.subjects)
    finally:
        for name in (old.name, new.name):
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(name)
