"""Fixtures of the sidecar tests (helpers: ``tests.services.meshproxy.mesh_helpers``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contrast.cli.localrun.mtls import serving_on_loopback
from contrast.testing.mesh import Generation
from tests.services.meshproxy.mesh_helpers import App


@pytest.fixture
def app() -> Iterator[App]:
    with serving_on_loopback(App, "app") as server:
        yield server


@pytest.fixture(scope="session")
def generation() -> Generation:
    return Generation.new(1)


@pytest.fixture(scope="session")
def foreign() -> Generation:
    """Another Coordinator's mesh CA: same names, other keys."""
    return Generation.new(2)
