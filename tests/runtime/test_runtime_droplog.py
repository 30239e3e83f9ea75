"""Messages a full subscription queue drops are logged in summary, not one line each.

A line per drop would make each message of a flood cost a log write in the client's read loop, which then
falls behind the socket: every request behind the flood, other sources' too, would wait for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.msg import Msg

from contrast.runtime import connection
from contrast.runtime.connection import SummaryLog, connect
from contrast.runtime.natsserver import NatsServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_drops_are_counted_and_reported_at_most_once_per_interval() -> None:
    clock = Clock()
    log = SummaryLog(every=5.0, clock=clock)
    assert log.record() == 1  # the first drop is reported at once
    assert [log.record() for _ in range(999)] == [None] * 999
    clock.now += 4.9
    assert log.record() is None
    clock.now += 0.2
    assert log.record() == 1001  # nothing is lost from the count
    assert log.record() is None


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.logged = asyncio.Event()

    def warning(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))
        self.logged.set()

    info = warning


async def test_a_flood_into_a_full_queue_logs_a_summary(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Recorder()
    monkeypatch.setattr(connection, "_log", log)
    nc = await connect([nats_server.url], name="droplog-test")
    release = asyncio.Event()

    async def slow(_: Msg) -> None:
        await release.wait()

    try:
        sub = await nc.subscribe("droplog.flood", cb=slow, pending_msgs_limit=4)
        await nc.flush()
        for _ in range(2000):
            await nc.publish("droplog.flood", b"x")
        await nc.flush()
        await asyncio.wait_for(log.logged.wait(), 10)
        await nc.flush()
        release.set()
        assert nc.stats["in_msgs"] >= 2000
        events = [e for e, _ in log.events]
        assert events == ["nats_slow_consumer"], log.events
        await sub.unsubscribe()
    finally:
        await nc.close()
