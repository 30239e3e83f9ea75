"""NATS connection with jittered exponential reconnect backoff and logged connection events, and the
credentials it authenticates with.

A process connects as one NATS user when ``CONTRAST_NATS_USER`` / ``CONTRAST_NATS_PASSWORD`` name one
(:class:`NatsCredentials`); the server then allows it exactly its role's subjects
(:mod:`contrast.runtime.natsauth`). Its reply inboxes live under ``_INBOX.<user>``, the only inboxes that
user may subscribe to, so no workload reads another's replies (nonces, for one). The URLs are tried in the
order given (the local runner hands each replica its own node first); a server that stops answering is
noticed within about ``PING_INTERVAL`` × (``MAX_OUTSTANDING_PINGS`` + 1) seconds and left for another.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import nats
from nats.aio.client import Client, Server
from nats.errors import SlowConsumerError

from contrast.runtime.logs import get_logger

_log = get_logger(__name__)

RECONNECT_BASE = 0.1
RECONNECT_CAP = 5.0
PING_INTERVAL: Final = (
    5  # seconds; nats-py's default (2 min) would keep a replica on a frozen server for 4 min
)
MAX_OUTSTANDING_PINGS: Final = 2
DROP_LOG_INTERVAL: Final = 5.0  # seconds between two log lines about dropped messages
USER_ENV: Final = "CONTRAST_NATS_USER"
PASSWORD_ENV: Final = "CONTRAST_NATS_PASSWORD"  # noqa: S105 - the variable's name, not a password
_USER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # also a subject token: the user's inbox prefix and source


def inbox_prefix(identity: str) -> str:
    """The reply-inbox prefix of a client that connects as ``identity`` (a user name, or the default source
    an initializer without credentials is mapped to)."""
    if not _USER.match(identity):
        raise ValueError(f"invalid NATS identity {identity!r}")
    return f"_INBOX.{identity}"


def is_inbox_of(subject: str, identity: str) -> bool:
    """Whether ``subject`` is one reply inbox of ``identity``: its prefix and exactly one more token, no
    wildcard. What a service checks before it answers on a subject a request names."""
    try:
        prefix = inbox_prefix(identity) + "."
    except ValueError:
        return False
    token = subject[len(prefix) :]
    return subject.startswith(prefix) and _USER.match(token) is not None


@dataclass(frozen=True)
class NatsCredentials:
    """A NATS user and its password (never printed)."""

    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not _USER.match(self.user):
            raise ValueError(f"invalid NATS user name {self.user!r}: letters, digits, '_' and '-' only")
        if not self.password:
            raise ValueError(f"NATS user {self.user}: empty password")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NatsCredentials | None:
        """``CONTRAST_NATS_USER`` and ``CONTRAST_NATS_PASSWORD``; None when no user is set (ValueError when
        only one of them is)."""
        env = os.environ if env is None else env
        user, password = env.get(USER_ENV, ""), env.get(PASSWORD_ENV, "")
        if not user and not password:
            return None
        if not user:
            raise ValueError(f"{PASSWORD_ENV} is set but {USER_ENV} is not")
        return cls(user, password)

    def env(self) -> dict[str, str]:
        """The environment that makes a child process connect as this user."""
        return {USER_ENV: self.user, PASSWORD_ENV: self.password}


def client_options(credentials: NatsCredentials | None, *, identity: str | None = None) -> dict[str, Any]:
    """``nats.connect`` options for ``credentials``: user, password and the user's own inbox prefix.
    ``identity`` sets the inbox prefix of a client without credentials (an initializer that the server maps
    to its default user)."""
    options: dict[str, Any] = {}
    if credentials is not None:
        options.update(user=credentials.user, password=credentials.password)
        identity = credentials.user
    if identity is not None:
        options["inbox_prefix"] = inbox_prefix(identity)
    return options


class SummaryLog:
    """Counts events that are logged in summary; :meth:`record` returns the count to log at most once per
    ``every`` seconds, else None.

    Used for what a flood makes frequent: messages the client dropped from a full subscription queue (nats-py
    reports each drop from its read loop, before it reads the next message: a log line per drop would make a
    flood's every message cost a write, the read loop would fall behind the socket, and the requests behind
    the flood, other sources' included, would wait in the server's buffer for it), and dead letters.
    """

    __slots__ = ("_clock", "_last", "_pending", "every")

    def __init__(self, every: float = DROP_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._pending = 0
        self._last = -math.inf

    def record(self) -> int | None:
        self._pending += 1
        now = self._clock()
        if now - self._last < self.every:
            return None
        self._last = now
        dropped, self._pending = self._pending, 0
        return dropped


_DISCONNECT_LISTENERS: weakref.WeakKeyDictionary[Client, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def on_disconnect(nc: Client, listener: Callable[[], None]) -> None:
    """Call ``listener`` each time ``nc`` (made by :func:`connect`) has lost its server, before it reconnects:
    nothing more arrives on the lost connection, and nothing has arrived on the next one yet."""
    _DISCONNECT_LISTENERS.setdefault(nc, []).append(listener)


def reconnect_delay(attempt: int, *, base: float = RECONNECT_BASE, cap: float = RECONNECT_CAP) -> float:
    """ "Full jitter" backoff: uniform in [0, min(cap, base·2^attempt)], so that replicas that lost the same
    server do not reconnect in lock-step (thundering herd)."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


def _choose_server(servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
    # nats-py asks us which server to try next and how long to wait first: the one with the fewest failed
    # attempts, after a jittered delay that grows with those attempts.
    server = min(servers, key=lambda s: s.reconnects)
    return server, reconnect_delay(server.reconnects)


async def connect(
    urls: Sequence[str],
    *,
    name: str,
    connect_timeout: float = 5.0,
    credentials: NatsCredentials | None = None,
    identity: str | None = None,
) -> Client:
    """Connect with unlimited reconnects (a replica outlives NATS restarts) and jittered backoff, as the user
    of ``credentials`` if given (see :func:`client_options` for ``identity``)."""

    drops = SummaryLog()

    async def on_error(e: Exception) -> None:
        if isinstance(e, SlowConsumerError):
            if (dropped := drops.record()) is not None:
                _log.warning("nats_slow_consumer", dropped=dropped, subject=e.subject[:200])
            return
        _log.warning("nats_error", error=type(e).__name__, detail=str(e)[:200])

    async def on_disconnected() -> None:
        _log.warning("nats_disconnected")
        for listener in _DISCONNECT_LISTENERS.get(nc, ()):
            listener()

    async def on_reconnected() -> None:
        _log.info("nats_reconnected", server=str(nc.connected_url.netloc if nc.connected_url else ""))

    async def on_closed() -> None:
        _log.info("nats_closed")

    nc: Client = await nats.connect(
        servers=list(urls),
        name=name,
        connect_timeout=int(max(1, connect_timeout)),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        dont_randomize=True,  # the caller's order: each replica starts on its own node of a cluster
        ping_interval=PING_INTERVAL,
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
        reconnect_to_server_handler=_choose_server,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        closed_cb=on_closed,
        **client_options(credentials, identity=identity),
    )
    return nc
