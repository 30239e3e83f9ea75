"""Session-wide fixtures: one real ``nats-server`` (JetStream, own store dir) for the tests that need NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client

from contrast.runtime.natsserver import NatsServer, NatsServerNotFound, find_nats_server, start_nats


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A JetStream-enabled nats-server on a free loopback port, shared by the session."""
    try:
        binary = find_nats_server()
    except NatsServerNotFound as e:
        pytest.skip(f"no nats-server binary: {e}")
    server = start_nats(binary=binary)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    """A plain client connection, drained at teardown."""
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        if not client.is_closed:
            await client.drain()
