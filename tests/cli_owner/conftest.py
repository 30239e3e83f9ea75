"""Fixtures of the owner-CLI tests: the CLI runs as a user runs it (``python -m contrast.cli.main``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The manifest-service tests' helpers (emulator, manifests, replicas) are shared with these tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "manifest_service"))

from mfs_helpers import (
    POLICY_COORD,
    POLICY_DB,
    emulator,
    fresh_nats,
    reference_values,
    start_replica_process,
)

from contrast.runtime.natsserver import NatsServer


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


@dataclass
class Cli:
    workspace: Path
    nats_url: str

    def __call__(self, *args: str, timeout: float = 20) -> tuple[int, dict[str, Any], str]:
        cmd = [sys.executable, "-m", "contrast.cli.main", *args, "--json", "--workspace", str(self.workspace)]
        if args[0] != "keygen":
            cmd += ["--nats", self.nats_url, "--timeout", str(timeout)]
        r = subprocess.run(cmd, cwd=self.workspace, capture_output=True, text=True, timeout=timeout + 30)
        try:
            out = json.loads(r.stdout) if r.stdout.strip() else {}
        except json.JSONDecodeError:
            out = {"raw": r.stdout}
        return r.returncode, out, r.stderr


def write_manifest(workspace: Path, emulator_dir: Path, keys: dict[str, Any], **changes: Any) -> Path:
    from mfs_helpers import H_COORD, H_DB

    m: dict[str, Any] = {
        "Policies": {
            H_COORD: {"SANs": ["coordinator"], "WorkloadSecretID": "", "Role": "coordinator"},
            H_DB: {"SANs": changes.get("db_sans", ["db"]), "WorkloadSecretID": "db", "Role": ""},
        },
        "ReferenceValues": changes.get("reference_values", reference_values(emulator_dir)),
        "WorkloadOwnerPubKeys": changes.get("owners", keys["WorkloadOwnerPubKeys"]),
        "SeedshareOwnerPubKeys": changes.get("shares", keys["SeedshareOwnerPubKeys"]),
    }
    path = workspace / changes.get("name", "manifest.json")
    path.write_text(json.dumps(m, indent=2) + "\n")
    return path


@pytest.fixture
def workspace(tmp_path: Path, owner_keys: Path) -> Path:
    for f in ("workload-owner.pem", "seedshare-owner.pem"):
        shutil.copy(owner_keys / f, tmp_path / f)
    (tmp_path / "coordinator.rego").write_bytes(POLICY_COORD)
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


__all__ = ["Cli", "start_replica_process", "write_manifest"]
