"""Which received requests a service may still answer: only those that arrived on its current connection.

A service user answers requests through its ``allow_responses`` permission (:mod:`contrast.runtime.natsauth`),
which the server grants per connection, for the requests it delivered on that connection. After a reconnect
(a node died or froze), a reply to a request that arrived before it is refused by the new server as a
permission violation, and the requester, whose answer would never arrive, asks again. So such replies are
not sent: a violation in a server's log then still means that someone tried what its role may not.

:class:`ReplyGate` counts the messages each subscription has handed to its callback; when the connection is
lost, every message handed over so far or still queued in the client came from the old connection.
A reply already written by the client but not yet flushed when the connection drops is sent on the next one
and refused all the same: that window is the client's write delay, not a handler's run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from contrast.runtime.connection import on_disconnect


@dataclass
class Intake:
    """The messages of one subscription, numbered in the order its callback receives them."""

    sub: Subscription | None = None  # set once subscribed
    received: int = 0
    stale_through: int = 0  # messages up to this number arrived on a connection that is gone

    def arrived(self) -> Callable[[], bool]:
        """Call first thing in the callback: whether this message may still be answered, asked when
        replying."""
        self.received += 1
        number = self.received
        return lambda: number > self.stale_through


@dataclass
class ReplyGate:
    """The intakes of one service's request subscriptions on ``nc``."""

    nc: Client
    _intakes: list[Intake] = field(default_factory=list)

    def __post_init__(self) -> None:
        on_disconnect(self.nc, self._disconnected)

    def intake(self) -> Intake:
        intake = Intake()
        self._intakes.append(intake)
        return intake

    def _disconnected(self) -> None:
        for intake in self._intakes:
            if intake.sub is not None:
                intake.stale_through = intake.received + intake.sub.pending_msgs
