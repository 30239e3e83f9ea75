"""Helpers of the owner-CLI tests: run the CLI as a user runs it, and write manifests."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The manifest-service tests' helpers (emulator, manifests, replicas) are shared with these tests.
from tests.services.manifest.mfs_helpers import manifest_obj

# The policy documents `set` sends, one per entry of write_manifest (written by the workspace fixture).
POLICY_FILES = ("coordinator.rego", "verifier.rego", "ca.rego", "db.rego")


@dataclass
class Cli:
    workspace: Path
    nats_url: str

    def __call__(self, *args: str, timeout: float = 20) -> tuple[int, dict[str, Any], str]:
        """``contrast ARGS --json``: the exit code, the JSON object on stdout, and stderr."""
        r = self.run(*args, "--json", timeout=timeout)
        try:
            out = json.loads(r.stdout) if r.stdout.strip() else {}
        except json.JSONDecodeError:
            out = {"raw": r.stdout}
        return r.returncode, out, r.stderr

    def text(self, *args: str, timeout: float = 20) -> tuple[int, str, str]:
        """``contrast ARGS`` as a person reads it: the exit code, stdout and stderr."""
        r = self.run(*args, timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "contrast.cli.main", *args, "--workspace", str(self.workspace)]
        if args[0] != "keygen":
            cmd += ["--nats", self.nats_url, "--timeout", str(timeout)]
        return subprocess.run(cmd, cwd=self.workspace, capture_output=True, text=True, timeout=timeout + 30)


def write_manifest(workspace: Path, emulator_dir: Path, keys: dict[str, Any], **changes: Any) -> Path:
    m = manifest_obj(
        emulator_dir,
        owners=changes.get("owners", keys["WorkloadOwnerPubKeys"]),
        shares=changes.get("shares", keys["SeedshareOwnerPubKeys"]),
        db_sans=changes.get("db_sans"),
    )
    if "reference_values" in changes:
        m["ReferenceValues"] = changes["reference_values"]
    path = workspace / changes.get("name", "manifest.json")
    path.write_text(json.dumps(m, indent=2) + "\n")
    return path
