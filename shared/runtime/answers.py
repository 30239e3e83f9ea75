"""Answers published to a subject whose subscriber this server may not know of yet, sent again until heard.

A verifier answers a queued nonce request on the inbox the request names. In a cluster the requester
subscribed to that inbox on *its* node a moment earlier, and the subscription's interest travels to the
other nodes asynchronously, while the request itself went a longer way (through the stream's leader and the
verifier's pull): the answer can reach the verifier's node first and be dropped there for want of a
subscriber, and the requester then waits out its timeout and asks again. (Core request/reply has no such
race: the request travels the same route, after the interest.)

So each answer carries a reply subject of ours: a server with no subscriber for the answer returns a
no-responders status (503) there at once, and :class:`Answers` publishes the answer again after a short
pause, until it is heard or its horizon passes. Answers not refused are forgotten after the horizon. No
receiver ever replies on that subject (the answered side has no right to), so a status is all that arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contrast.runtime.logs import get_logger

_log = get_logger(__name__)
_STATUS: Final = "Status"
_NO_RESPONDERS: Final = "503"


@dataclass(slots=True)
class _Pending:
    subject: str
    data: bytes
    headers: dict[str, str]
    expires: float  # time.monotonic()
    sent: int = 1


class Answers:
    """Publishes answers and re-sends those the server found no subscriber for.

    ``pause``: seconds before an answer is sent again (interest crosses a route in about a millisecond);
    ``horizon``: how long an answer is kept for that (the requester asks again after its own timeout);
    ``max_pending``: answers kept at most (the oldest is forgotten first), a bound on memory under load.
    """

    def __init__(
        self,
        nc: Client,
        *,
        pause: float = 0.02,
        horizon: float = 1.0,
        max_pending: int = 4096,
    ) -> None:
        if not 0 < pause < horizon or max_pending < 1:
            raise ValueError("need 0 < pause < horizon and max_pending >= 1")
        self._nc = nc
        self._pause, self._horizon, self._max_pending = pause, horizon, max_pending
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._next = 0
        self._prefix = ""
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.resent = 0  # answers sent again (for tests and metrics)

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_status)
        await self._nc.flush()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        if self._sub is None:
            raise RuntimeError("Answers.start() was not called")
        now = time.monotonic()
        self._forget(now)
        self._next += 1
        self._pending[self._next] = _Pending(subject, data, headers, now + self._horizon)
        await self._nc.publish(subject, data, reply=f"{self._prefix}.{self._next}", headers=headers)

    def _forget(self, now: float) -> None:
        # Kept in the order sent, so the expired ones (and the oldest, over the bound) are at the front.
        while self._pending:
            key, first = next(iter(self._pending.items()))
            if first.expires > now and len(self._pending) < self._max_pending:
                break
            del self._pending[key]

    async def _on_status(self, msg: Msg) -> None:
        if (msg.headers or {}).get(_STATUS) != _NO_RESPONDERS:
            return  # nobody may answer here: anything but a server status is ignored
        try:
            key = int(msg.subject.rsplit(".", 1)[-1])
        except ValueError:
            return
        pending = self._pending.get(key)
        if pending is None or pending.expires <= time.monotonic() + self._pause:
            self._pending.pop(key, None)
            return
        task = asyncio.create_task(self._again(key, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _again(self, key: int, pending: _Pending) -> None:
        await asyncio.sleep(self._pause)
        if self._pending.get(key) is not pending:
            return
        pending.sent += 1
        self.resent += 1
        try:
            await self._nc.publish(
                pending.subject, pending.data, reply=f"{self._prefix}.{key}", headers=pending.headers
            )
        except Exception as e:  # connection lost: the requester asks again
            _log.warning("answer_resend_failed", error=type(e).__name__)
