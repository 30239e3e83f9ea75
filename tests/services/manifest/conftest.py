"""Fixtures of the manifest-service tests (helpers in ``mfs_helpers``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from contrast.runtime.natsserver import NatsServer
from tests.services.manifest.mfs_helpers import emulator, fresh_nats


@pytest.fixture(scope="session")
def emulator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The emulator state shared by the session (``CONTRAST_EMULATOR_DIR``)."""
    root = tmp_path_factory.mktemp("emulator")
    emulator(root)
    return root


@pytest.fixture
def private_nats() -> Iterator[NatsServer]:
    with fresh_nats() as server:
        yield server
