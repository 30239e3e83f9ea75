"""A service does not answer, after a reconnect, a request that arrived before it (three-node cluster, users).

A service user may answer only requests the server delivered on the same connection (``allow_responses``).
The manifest service here holds a request from the owner while its node is killed; it reconnects to another
node and then finishes the request. The control is a bare client of the same user that answers anyway: the
new server refuses the reply and logs a permission violation, and the owner gets nothing either way. With
the runtime the reply is dropped, the log stays clean, and requests that arrive after the reconnect are
answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from contrast import subjects
from contrast.runtime import Endpoint, Handlers, RequestContext, Runtime, RuntimeConfig, Service, serve
from contrast.runtime.connection import NatsCredentials, client_options
from contrast.runtime.natsauth import role_users, server_config
from contrast.runtime.natsserver import NatsServer, nats_cluster
from contrast.wire.v1 import WireStruct, decoder, encode
from tests.services.evil_bus import eventually

NAMES = ["verifier", "ca", "manifest", "owner", "monitor", subjects.DEFAULT_SOURCE]


class Ask(WireStruct, frozen=True, kw_only=True):
    text: str


class Held:
    """A handler that answers ``hold`` only once released."""

    def __init__(self) -> None:
        self.arrived, self.release = asyncio.Event(), asyncio.Event()

    async def __call__(self, req: Ask, ctx: RequestContext) -> Ask:
        if req.text == "hold":
            self.arrived.set()
            await self.release.wait()
        return req


@contextlib.asynccontextmanager
async def cluster() -> AsyncIterator[tuple[list[NatsServer], dict[str, str]]]:
    passwords = {n: secrets.token_urlsafe(12) for n in NAMES}
    with nats_cluster(3, authorization=server_config(role_users(passwords))) as servers:
        yield servers, passwords


async def connect(servers: list[NatsServer], passwords: dict[str, str], user: str, first: int) -> Client:
    urls = [s.url for s in servers[first:] + servers[:first]]
    creds = NatsCredentials(user, passwords[user])
    return await nats.connect(
        urls, dont_randomize=True, max_reconnect_attempts=-1, reconnect_time_wait=0.1, **client_options(creds)
    )


def violations(servers: list[NatsServer]) -> list[str]:
    out = []
    for n in servers:
        if n.log_path is not None and n.log_path.exists():
            out += [line for line in n.log_path.read_text().splitlines() if "Violation" in line]
    return out


async def ask(owner: Client, text: str, timeout: float) -> Ask:
    reply = await owner.request(subjects.USER_STATUS, encode(Ask(text=text)), timeout=timeout)
    return decoder(Ask).decode(reply.data)


async def answered_now(owner: Client) -> None:
    """Until a request is answered (the responder's subscription has reached the owner's node)."""
    for _ in range(50):
        with contextlib.suppress(Exception):
            await ask(owner, "now", timeout=0.5)
            return
    raise AssertionError("the service never answered")


async def moved(nc: Client, dead: NatsServer) -> None:
    def elsewhere() -> bool:
        url = nc.connected_url
        return nc.is_connected and url is not None and url.port != dead.port

    await eventually(elsewhere, timeout=20)


async def test_a_request_held_across_a_reconnect_is_not_answered() -> None:
    held = Held()

    async def build(rt: Runtime) -> Handlers:
        endpoint = Endpoint(
            name="status", subject=subjects.USER_STATUS, request_type=Ask, handler=held, timeout=30.0
        )
        return Handlers(endpoints=(endpoint,))

    service = Service(name="manifest", version="0.1.0", build=build)
    async with cluster() as (servers, passwords):
        config = RuntimeConfig(
            nats_urls=tuple(s.url for s in servers),
            replica="manifest-1",
            credentials=NatsCredentials("manifest", passwords["manifest"]),
            shutdown_timeout=2.0,
        )
        async with serve(service, config) as running:
            nc = running.runtime.nc
            owner = await connect(servers, passwords, "owner", first=1)
            await answered_now(owner)
            pending = asyncio.create_task(ask(owner, "hold", timeout=8.0))
            await asyncio.wait_for(held.arrived.wait(), 10)
            dead = next(
                s for s in servers if nc.connected_url is not None and s.port == nc.connected_url.port
            )
            await asyncio.to_thread(dead.kill)
            await moved(nc, dead)
            held.release.set()
            with pytest.raises(TimeoutError):  # nats-py's TimeoutError is the builtin's subclass
                await pending
            await answered_now(owner)  # what arrives after the reconnect is answered
            await owner.close()
        assert violations(servers) == []


async def test_control_a_reply_after_a_reconnect_is_a_permission_violation() -> None:
    async with cluster() as (servers, passwords):
        responder = await connect(servers, passwords, "manifest", first=0)
        requests: asyncio.Queue[Msg] = asyncio.Queue()

        async def record(msg: Msg) -> None:
            await requests.put(msg)

        await responder.subscribe(subjects.USER_STATUS, cb=record)
        await responder.flush()
        owner = await connect(servers, passwords, "owner", first=1)
        pending: asyncio.Task[Any] | None = None
        for _ in range(50):  # until the subscription has reached the owner's node
            pending = asyncio.create_task(owner.request(subjects.USER_STATUS, b"hold", timeout=8.0))
            with contextlib.suppress(TimeoutError):
                msg = await asyncio.wait_for(requests.get(), 0.5)
                break
            pending.cancel()
        assert pending is not None
        await asyncio.to_thread(servers[0].kill)
        await moved(responder, servers[0])
        await responder.publish(msg.reply, b"late answer")
        await responder.flush()
        with pytest.raises(TimeoutError):
            await pending
        await eventually(lambda: bool(violations(servers)), timeout=5)
        assert all('"$G/user:manifest"' in v and "Publish Violation" in v for v in violations(servers))
        for nc in (owner, responder):
            with contextlib.suppress(Exception):
                await nc.close()
