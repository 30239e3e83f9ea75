"""Fixtures for the service tests: a private nats-server per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contrast.runtime.natsserver import NatsServer, NatsServerNotFound, find_nats_server, start_nats


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
