"""Session-wide fixtures: one real ``nats-server`` (JetStream, own store dir) for the tests that need NATS,
and one emulator state (SNP and TDX) for the tests that need an emulated platform."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.platform import emulated
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


@pytest.fixture(scope="session")
def emulator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One emulator state for the whole session: RSA-4096 key generation takes seconds."""
    d = tmp_path_factory.mktemp("emulator")
    emulated.load_snp_emulator(d)
    emulated.load_tdx_emulator(d)
    return d


@pytest.fixture(scope="session")
def snp_emulator(emulator_dir: Path) -> EmulatedSnpPlatform:
    return emulated.load_snp_emulator(emulator_dir)


@pytest.fixture(scope="session")
def tdx_emulator(emulator_dir: Path) -> EmulatedTdxPlatform:
    return emulated.load_tdx_emulator(emulator_dir)
