"""Fixtures of the owner-CLI tests: the CLI runs as a user runs it (``python -m contrast.cli.main``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contrast.runtime.natsserver import NatsServer
from tests.cli.owner.owner_cli import Cli
from tests.services.manifest.mfs_helpers import (
    POLICY_CA,
    POLICY_COORD,
    POLICY_DB,
    POLICY_VERIFIER,
    emulator,
    fresh_nats,
)


@pytest.fixture(scope="session")
def emulator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emulator")
    emulator(root)
    return root


@pytest.fixture(scope="session")
def owner_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Owner keys made once by ``contrast keygen`` (RSA generation is slow)."""
    d = tmp_path_factory.mktemp("keys")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "contrast.cli.main",
            "keygen",
            "--rsa-bits",
            "3072",
            "--workspace",
            str(d),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    (d / "keygen.json").write_text(r.stdout)
    return d


@pytest.fixture
def workspace(tmp_path: Path, owner_keys: Path) -> Path:
    for f in ("workload-owner.pem", "seedshare-owner.pem"):
        shutil.copy(owner_keys / f, tmp_path / f)
    (tmp_path / "coordinator.rego").write_bytes(POLICY_COORD)
    (tmp_path / "verifier.rego").write_bytes(POLICY_VERIFIER)
    (tmp_path / "ca.rego").write_bytes(POLICY_CA)
    (tmp_path / "db.rego").write_bytes(POLICY_DB)
    return tmp_path


@pytest.fixture
def keys(owner_keys: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((owner_keys / "keygen.json").read_text())
    return data


@pytest.fixture
def private_nats() -> Iterator[NatsServer]:
    with fresh_nats() as server:
        yield server


@pytest.fixture
def cli(workspace: Path, private_nats: NatsServer) -> Cli:
    return Cli(workspace, private_nats.url)
