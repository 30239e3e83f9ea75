"""Fixtures for the attestation tests: one emulator for the session, a private nats-server per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.platform import emulated
from contrast.runtime.natsserver import NatsServer, NatsServerNotFound, find_nats_server, start_nats


@pytest.fixture(scope="session")
def emulator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One emulator state for the session: RSA-4096 key generation takes seconds."""
    d = tmp_path_factory.mktemp("attestation-emulator")
    emulated.load_snp_emulator(d)
    emulated.load_tdx_emulator(d)
    return d


@pytest.fixture(scope="session")
def snp_emulator(emulator_dir: Path) -> EmulatedSnpPlatform:
    return emulated.load_snp_emulator(emulator_dir)


@pytest.fixture(scope="session")
def tdx_emulator(emulator_dir: Path) -> EmulatedTdxPlatform:
    return emulated.load_tdx_emulator(emulator_dir)


@pytest.fixture
def private_nats() -> Iterator[NatsServer]:
    """A fresh JetStream server per test: streams, consumers and buckets never leak between tests."""
    try:
        binary = find_nats_server()
    except NatsServerNotFound as e:
        pytest.skip(f"no nats-server binary: {e}")
    server = start_nats(binary=binary)
    try:
        yield server
    finally:
        server.cleanup()
