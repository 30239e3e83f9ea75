"""Helpers of the owner-CLI tests: run the CLI as a user runs it, and write manifests."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The manifest-service tests' helpers (emulator, manifests, replicas) are shared with these tests.
from tests.services.manifest.mfs_helpers import H_COORD, H_DB, reference_values


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
