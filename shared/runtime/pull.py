"""A continuous pull from a durable JetStream consumer, sized by the caller's free slots.

The feed keeps **one pull request** outstanding for exactly the slots that are free when it is sent, and
dispatches every message the moment it arrives (from the subscription's callback: no per-message
``next_msg`` task, as nats-py's ``fetch`` makes). When the request is used up (every slot taken) or over (the
server's ``408``/``409`` status, or our own deadline), the next one asks for whatever is free by then. An
idle queue costs one pull request per ``expires`` and logs nothing; :meth:`PullFeed.stop` is immediate (with a
pace, it waits out the current pause for tokens, at most ``expires``).

With a ``pace`` (a :class:`~contrast.runtime.admission.Rate`), a pull request asks for no more messages than
the pace's token bucket holds, and the tokens a request did not use are given back: the replica takes at
most that many messages per second, however many wait, and the rest stays in (or is refused by) the server.
When the bucket runs low (a queue that never empties: a flood), the next request waits for a quarter of a
burst's worth rather than asking for one message at a time: a pull request and a wake-up per message would
double what each costs.

Bounds: a message is dispatched only against a reserved slot, so this replica never has more than
``capacity`` messages in flight. A pull request that vanished (the connection dropped while it was
outstanding) is given up after its expiry plus a grace period. A late delivery from it is counted against
the next request's credit if there is one, and otherwise nak'ed (with a delay that outlasts our outstanding
request), so it cannot exceed the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contrast.runtime.admission import Rate, TokenBucket
from contrast.runtime.logs import get_logger

STATUS_HEADER: Final = "Status"
DESCRIPTION_HEADER: Final = "Description"
_HEARTBEAT: Final = "100"
_NORMAL_END: Final = frozenset({"404", "408"})  # no messages / request expired: an idle queue, not a fault
_GRACE: Final = 0.5  # seconds past a request's expiry before we assume the server has forgotten it

_log = get_logger(__name__)


class PullFeed:
    """Feeds messages of ``durable`` on ``stream`` to ``dispatch``, at most ``capacity`` unfinished at once.

    The owner calls :meth:`release` once per dispatched message when it is finished (acked, nak'ed or
    terminated). :meth:`run` returns soon after :meth:`stop`.
    """

    def __init__(
        self,
        nc: Client,
        *,
        api_prefix: str,
        stream: str,
        durable: str,
        capacity: int,
        expires: float,
        dispatch: Callable[[Msg], None],
        name: str,
        pace: Rate | None = None,
    ) -> None:
        if capacity < 1 or expires <= 0:
            raise ValueError("capacity and expires must be positive")
        self._nc = nc
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._capacity = capacity
        self._expires = expires
        self._dispatch = dispatch
        self._name = name
        self._pace = TokenBucket(pace) if pace is not None else None
        self._min_batch = max(1, pace.burst // 4) if pace is not None else 1
        self._free = capacity  # slots neither in flight nor promised to the outstanding pull request
        self._credit = 0  # messages the outstanding pull request may still deliver
        self._freed = asyncio.Event()
        self._request_over = asyncio.Event()
        self._stopping = asyncio.Event()
        self._pause = False
        self._request_expiry = float("-inf")  # time.monotonic() when the last pull request expires
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self.late_deliveries = 0  # messages given back because no slot was reserved for them

    @property
    def free(self) -> int:
        return self._free

    def release(self) -> None:
        self._free += 1
        self._freed.set()

    def stop(self) -> None:
        self._stopping.set()
        self._freed.set()
        self._request_over.set()

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._on_message, pending_msgs_limit=2 * self._capacity + 64
        )

    async def close(self, timeout: float = 0.0) -> None:
        """Unsubscribe, after waiting (at most ``timeout``) until the last pull request has expired on the
        server: what it still delivers meanwhile is nak'ed for another replica at once, instead of going to
        a dead inbox and waiting out ack_wait."""
        linger = min(timeout, self._request_expiry - time.monotonic())
        if linger > 0 and self._sub is not None:
            await asyncio.sleep(linger)
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS_HEADER) if msg.headers else None
        if status is None:
            if self._credit > 0:
                self._credit -= 1
                self._dispatch(msg)
                if self._credit == 0:
                    self._request_over.set()
                return
            # A late delivery for a request we gave up on (or one after stop): no slot is reserved for it,
            # so hand it back rather than exceed the bound or let it wait out ack_wait. The delay outlasts
            # our outstanding request, which would otherwise take it straight back (each time burning a
            # delivery); by then another replica, or our next request, gets it.
            self.late_deliveries += 1
            delay = max(0.0, self._request_expiry - time.monotonic()) + _GRACE
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)
            return
        if status == _HEARTBEAT:
            return
        if status not in _NORMAL_END:  # e.g. 409: leadership change, consumer deleted, too many waiting
            description = msg.headers.get(DESCRIPTION_HEADER, "") if msg.headers else ""
            _log.info("pull_ended", worker=self._name, status=status, description=description[:128])
            self._pause = True
        self._request_over.set()

    async def run(self) -> None:
        if self._sub is None:
            raise RuntimeError("PullFeed.start() first")
        while not self._stopping.is_set():
            if self._free == 0:
                self._freed.clear()
                await self._freed.wait()
                continue
            batch = self._free
            if self._pace is not None:
                if (wait := self._pace.wait(min(batch, self._min_batch))) > 0:
                    await asyncio.sleep(min(self._expires, wait))  # a short sleep: stop() waits for it
                    continue
                batch = self._pace.take_up_to(batch)
            self._credit, self._free = batch, self._free - batch
            self._request_over.clear()
            try:
                request = {"batch": self._credit, "expires": int(self._expires * 1e9)}
                self._request_expiry = time.monotonic() + self._expires
                await self._nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)
                # Over when every credit is used, the server ends it (408 on expiry), or -- if the
                # connection dropped and the server forgot it -- our own deadline passes.
                try:
                    await asyncio.wait_for(self._request_over.wait(), self._expires + _GRACE)
                except TimeoutError:
                    _log.info("pull_unanswered", worker=self._name)  # connection dropped? ask again
            except Exception as e:  # connection trouble: back off; the client reconnects by itself
                _log.warning("pull_failed", worker=self._name, error=type(e).__name__)
                self._pause = True
            finally:
                self._free += self._credit
                if self._pace is not None:
                    self._pace.give_back(self._credit)
                self._credit = 0
            if self._pause:
                self._pause = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.2)  # do not spin on a lasting fault
