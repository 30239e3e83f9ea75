"""NATS connection with jittered exponential reconnect backoff and logged connection events."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import nats
from nats.aio.client import Client, Server

from contrast.runtime.logs import get_logger

_log = get_logger(__name__)

RECONNECT_BASE = 0.1
RECONNECT_CAP = 5.0


def reconnect_delay(attempt: int, *, base: float = RECONNECT_BASE, cap: float = RECONNECT_CAP) -> float:
    """ "Full jitter" backoff: uniform in [0, min(cap, base·2^attempt)], so that replicas that lost the same
    server do not reconnect in lock-step (thundering herd)."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


def _choose_server(servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
    # nats-py asks us which server to try next and how long to wait first: the one with the fewest failed
    # attempts, after a jittered delay that grows with those attempts.
    server = min(servers, key=lambda s: s.reconnects)
    return server, reconnect_delay(server.reconnects)


async def connect(urls: Sequence[str], *, name: str, connect_timeout: float = 5.0) -> Client:
    """Connect with unlimited reconnects (a replica outlives NATS restarts) and jittered backoff."""

    async def on_error(e: Exception) -> None:
        _log.warning("nats_error", error=type(e).__name__, detail=str(e)[:200])

    async def on_disconnected() -> None:
        _log.warning("nats_disconnected")

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
        reconnect_to_server_handler=_choose_server,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        closed_cb=on_closed,
    )
    return nc
