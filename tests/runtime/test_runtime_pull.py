"""The worker's pull feed against real JetStream: messages are dispatched as they arrive while a pull request
for many is outstanding, never more than the free slots are in flight, a delivery nobody reserved a slot for
is handed back, and stop is prompt."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from contrast.runtime.pull import PullFeed


@pytest.fixture
async def queue(nc: Client) -> AsyncIterator[tuple[str, str]]:
    """A fresh work-queue stream with one durable consumer: (stream name, subject)."""
    name = f"PULLT{uuid.uuid4().hex[:8].upper()}"
    subject = f"pullt.{name.lower()}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE))
    await js.add_consumer(
        name, ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=5)
    )
    yield name, subject
    await js.delete_stream(name)


def feed(nc: Client, stream: str, capacity: int, expires: float, dispatch: list[Msg]) -> PullFeed:
    return PullFeed(
        nc,
        api_prefix="$JS.API",
        stream=stream,
        durable="d",
        capacity=capacity,
        expires=expires,
        dispatch=dispatch.append,
        name="test",
    )


async def until(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def pull_outstanding(nc: Client, stream: str) -> None:
    """Until the server holds our pull request for consumer ``d`` (it counts it as waiting)."""
    for _ in range(500):
        if (await nc.jetstream().consumer_info(stream, "d")).num_waiting > 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no pull request reached the server")


async def test_a_message_is_dispatched_on_arrival_while_a_large_request_is_outstanding(
    nc: Client, queue: tuple[str, str]
) -> None:
    stream, subject = queue
    got: list[Msg] = []
    f = feed(nc, stream, capacity=16, expires=5.0, dispatch=got)
    await f.start()
    runner = asyncio.create_task(f.run())
    try:
        await pull_outstanding(nc, stream)  # the pull request for 16 is outstanding and the queue is empty
        sent = time.monotonic()
        await nc.jetstream().publish(subject, b"one")
        # Not held back until the request for 16 fills or expires (5 s).
        await until(lambda: len(got) == 1, 1.0)
        assert time.monotonic() - sent < 1.0
        assert f.free == 0  # the other 15 slots are promised to the outstanding request
        await got[0].ack()
        f.release()
    finally:
        f.stop()
        await asyncio.wait_for(runner, 1.0)  # prompt, although the request had 5 s left
        await f.close()


async def test_never_more_in_flight_than_capacity_and_each_message_once(
    nc: Client, queue: tuple[str, str]
) -> None:
    stream, subject = queue
    js = nc.jetstream()
    for i in range(30):
        await js.publish(subject, str(i).encode())
    got: list[Msg] = []
    in_flight = 0
    peak = 0
    tasks: set[asyncio.Task[None]] = set()

    async def work(msg: Msg) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        await msg.ack()
        in_flight -= 1
        got.append(msg)
        f.release()

    def dispatch(msg: Msg) -> None:
        task = asyncio.create_task(work(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    f = PullFeed(
        nc,
        api_prefix="$JS.API",
        stream=stream,
        durable="d",
        capacity=3,
        expires=1.0,
        dispatch=dispatch,
        name="t",
    )
    await f.start()
    runner = asyncio.create_task(f.run())
    try:
        await until(lambda: len(got) == 30, 10.0)
    finally:
        f.stop()
        await asyncio.wait_for(runner, 2.0)
        await f.close()
    assert 1 <= peak <= 3
    assert sorted(int(m.data) for m in got) == list(range(30))
    assert all(m.metadata.num_delivered == 1 for m in got)
    assert f.late_deliveries == 0


async def test_a_delivery_without_a_reserved_slot_is_handed_back(nc: Client, queue: tuple[str, str]) -> None:
    stream, subject = queue
    got: list[Msg] = []
    f = feed(nc, stream, capacity=2, expires=1.0, dispatch=got)
    await f.start()  # no run(): no credit is ever reserved
    try:
        # A pull request the feed did not make (as if left from before a reconnect) delivers to its inbox.
        request = json.dumps({"batch": 1, "expires": 2_000_000_000}).encode()
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT." + stream + ".d", request, reply=f._inbox)
        await nc.flush()
        await nc.jetstream().publish(subject, b"stray")
        await until(lambda: f.late_deliveries == 1, 2.0)
        assert got == []
    finally:
        await f.close()
    # It went back to the queue (nak), not left for ack_wait (30 s).
    sub = await nc.jetstream().pull_subscribe(subject, durable="d", stream=stream)
    (again,) = await sub.fetch(1, timeout=3.0)
    assert again.data == b"stray"
    assert again.metadata.num_delivered == 2
    await again.ack()


async def test_after_stop_a_delivery_is_handed_back_not_left_for_ack_wait(
    nc: Client, queue: tuple[str, str]
) -> None:
    stream, subject = queue
    got: list[Msg] = []
    f = feed(nc, stream, capacity=4, expires=1.0, dispatch=got)
    await f.start()
    runner = asyncio.create_task(f.run())
    await pull_outstanding(nc, stream)  # a pull request for 4 is outstanding on the server
    f.stop()
    await asyncio.wait_for(runner, 1.0)
    closing = asyncio.create_task(f.close(timeout=2.0))  # lingers until that request expired
    await nc.jetstream().publish(subject, b"after stop")
    await asyncio.wait_for(closing, 2.0)
    assert got == []
    assert f.late_deliveries == 1
    sub = await nc.jetstream().pull_subscribe(subject, durable="d", stream=stream)
    (again,) = await sub.fetch(1, timeout=3.0)  # about when that request expired, not after ack_wait (30 s)
    assert again.metadata.num_delivered == 2  # handed back once, not bounced between us and the server
    await again.ack()
