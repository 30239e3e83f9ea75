"""Stream workers against real JetStream: ack after durable output, retry, dead letters, and no loss when a
worker is SIGKILLed mid-message."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from contrast import subjects
from contrast.runtime import RunningService, RuntimeConfig, serve
from contrast.runtime.worker import UNREADABLE_KEPT
from contrast.subjects import ConsumerSpec
from contrast.wire.v1 import DeadLetter, decoder, encode
from tests.runtime.procs import spawn, wait_ready
from tests.runtime.rt_services import DONE, STARTED, WORK, WORK_STREAM, WORKER_SERVICE, Done, Job


@pytest.fixture
async def worker(nats_url: str) -> AsyncIterator[RunningService]:
    async with serve(WORKER_SERVICE, RuntimeConfig(nats_urls=(nats_url,), replica="w-in")) as running:
        yield running


async def submit(js: JetStreamContext, job: Job) -> None:
    await js.publish(WORK, encode(job), headers={"Nats-Msg-Id": job.job_id})


async def done_for(js: JetStreamContext, job_id: str, *, settle: float = 0.3) -> list[Done]:
    """Every Done in TESTDONE for ``job_id`` (reads the whole stream with an ephemeral consumer)."""
    sub = await js.pull_subscribe(DONE, stream="TESTDONE")
    found: list[Done] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=settle)
            except TimeoutError:
                return found
            for m in msgs:
                d = decoder(Done).decode(m.data)
                if d.job_id == job_id:
                    found.append(d)
    finally:
        await sub.unsubscribe()


async def wait_done(js: JetStreamContext, job_id: str, timeout: float = 10) -> list[Done]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = await done_for(js, job_id, settle=0.1)
        if found:
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(job_id)


async def work_queue_empty(js: JetStreamContext, timeout: float = 5) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await js.stream_info(WORK_STREAM.name)).state.messages:
        assert loop.time() < deadline, "input was not removed from the work queue"
        await asyncio.sleep(0.05)


async def test_output_then_ack(worker: RunningService, nc: Client) -> None:
    js = nc.jetstream()
    job = Job(job_id=uuid.uuid4().hex)
    await submit(js, job)
    (done,) = await wait_done(js, job.job_id)
    assert done.replica == "w-in"
    assert done.deliveries == 1
    await work_queue_empty(js)


async def test_transient_fault_is_retried(worker: RunningService, nc: Client) -> None:
    js = nc.jetstream()
    job = Job(job_id=uuid.uuid4().hex, kind="transient_once")
    await submit(js, job)
    (done,) = await wait_done(js, job.job_id)
    assert done.deliveries == 2
    await work_queue_empty(js)


async def test_poison_is_dead_lettered_and_terminated(worker: RunningService, nc: Client) -> None:
    js = nc.jetstream()
    letters = await nc.subscribe(subjects.EVENT_DEADLETTER)
    job = Job(job_id=uuid.uuid4().hex, kind="poison")
    await submit(js, job)
    garbage_id = uuid.uuid4().hex
    garbage = b"\xc1not msgpack" + bytes(4000)
    await js.publish(WORK, garbage, headers={"Nats-Msg-Id": garbage_id})
    got: dict[str, DeadLetter] = {}
    while len(got) < 2:
        letter = decoder(DeadLetter).decode((await letters.next_msg(timeout=5)).data)
        got[letter.msg_id] = letter
    await letters.unsubscribe()
    assert got[job.job_id].code == "request.invalid_job"
    assert got[job.job_id].payload == encode(job)
    assert got[job.job_id].deliveries == 1
    assert got[garbage_id].code == "request.decode"
    assert got[garbage_id].stream == WORK_STREAM.name
    # What does not decode keeps only enough to recognise it (a flood must not fill the audit log with it);
    # what decodes keeps all, to be replayed after a fix (above).
    assert got[garbage_id].payload == garbage[:UNREADABLE_KEPT]
    assert len(garbage) > UNREADABLE_KEPT
    await work_queue_empty(js)
    assert await done_for(js, job.job_id) == []
    # the dead letter is itself durable (EVENTS stream)
    stored = await js.get_last_msg(subjects.EVENTS.name, subjects.EVENT_DEADLETTER)
    assert decoder(DeadLetter).decode(stored.data).msg_id in got


@pytest.mark.parametrize("kind", ["hold", "publish_then_hold"])
async def test_sigkill_mid_message_loses_nothing(nats_url: str, nc: Client, kind: str) -> None:
    js = nc.jetstream()
    victim = spawn("worker", nats_url, "victim")
    try:
        await wait_ready(nc, "worker", "victim", victim)
        started = await nc.subscribe(STARTED)
        job = Job(job_id=uuid.uuid4().hex, kind=kind, hold=0.5)
        await submit(js, job)
        job_id, replica, deliveries = msgspec.msgpack.decode((await started.next_msg(timeout=10)).data)
        assert (job_id, replica, deliveries) == (job.job_id, "victim", 1)
        os.kill(
            victim.pid, signal.SIGKILL
        )  # mid-message: after (or before) its output, always before its ack
        victim.wait(5)
        async with serve(WORKER_SERVICE, RuntimeConfig(nats_urls=(nats_url,), replica="survivor")):
            # redelivered after ack_wait (1 s) to the survivor, which finishes it
            if kind == "hold":
                job_id, replica, deliveries = msgspec.msgpack.decode(
                    (await started.next_msg(timeout=10)).data
                )
                assert (job_id, replica, deliveries) == (job.job_id, "survivor", 2)
            else:
                await started.next_msg(timeout=10)
            await work_queue_empty(js, timeout=10)
        done = await done_for(js, job.job_id)
        assert len(done) == 1, done  # processed once: a duplicate output was deduplicated by msg id
        expected = "survivor" if kind == "hold" else "victim"
        assert done[0].replica == expected
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(5)


async def test_max_deliveries_advisory_dead_letters_a_message_no_replica_finished(
    nats_url: str, nc: Client
) -> None:
    """A message whose every delivery died unanswered (replicas crashed on it) is dead-lettered from the
    server's MAX_DELIVERIES advisory and removed from the work queue."""
    import dataclasses

    from opentelemetry.sdk.trace import TracerProvider

    from contrast.runtime.jetstream import ensure_consumer, ensure_stream
    from contrast.runtime.metrics import Metrics
    from contrast.runtime.worker import StreamWorker, WorkerRunner

    stream = dataclasses.replace(WORK_STREAM, name="TESTADV", subjects=("test.v1.adv",))
    consumer = ConsumerSpec(
        stream=stream,
        durable="advworker",
        filter_subject="test.v1.adv",
        ack_wait=0.5,
        max_deliver=1,
        max_ack_pending=8,
    )

    async def never_called(job: Job, ctx: object) -> None:
        raise AssertionError("the crashing consumer below takes the message")

    js = nc.jetstream()
    await ensure_stream(js, stream)
    await ensure_stream(js, subjects.EVENTS)
    await ensure_consumer(js, consumer)
    worker = StreamWorker(name="adv", consumer=consumer, message_type=Job, handler=never_called, timeout=0.4)
    runner = WorkerRunner(
        worker,
        nc=nc,
        js=js,
        service="t",
        replica="t",
        tracer=TracerProvider().get_tracer("t"),
        metrics=Metrics(),
    )
    advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream.name}.{consumer.durable}"
    watch = await nc.subscribe(advisory, cb=runner._on_max_deliveries)
    letters = await nc.subscribe(subjects.EVENT_DEADLETTER)
    job = Job(job_id=uuid.uuid4().hex)
    await js.publish("test.v1.adv", encode(job), headers={"Nats-Msg-Id": job.job_id})
    crashing = await js.pull_subscribe("test.v1.adv", durable=consumer.durable, stream=stream.name)
    (taken,) = await crashing.fetch(1, timeout=5)  # a "replica" takes it and dies without an answer
    assert taken.metadata.num_delivered == 1
    letter = decoder(DeadLetter).decode((await letters.next_msg(timeout=10)).data)
    assert letter.code == "internal.max_deliveries"
    assert letter.msg_id == job.job_id
    assert letter.payload == encode(job)
    for _ in range(50):
        if (await js.stream_info(stream.name)).state.messages == 0:
            break
        await asyncio.sleep(0.05)
    assert (await js.stream_info(stream.name)).state.messages == 0
    await watch.unsubscribe()
    await letters.unsubscribe()
    await crashing.unsubscribe()
