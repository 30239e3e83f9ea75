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
from procs import spawn, wait_ready
from rt_services import DONE, STARTED, WORK, WORK_STREAM, WORKER_SERVICE, Done, Job

from contrast import subjects
from contrast.runtime import RunningService, RuntimeConfig, serve
from contrast.wire.v1 import DeadLetter, decoder, encode


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
    await js.publish(WORK, b"\xc1not msgpack", headers={"Nats-Msg-Id": garbage_id})
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
