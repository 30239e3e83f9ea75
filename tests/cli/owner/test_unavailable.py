"""No answer is no refusal: an unreachable NATS and a Coordinator that waits for recovery are named at once,
with exit code 3 and their own codes, never a traceback or the wait for the whole ``--timeout``."""

from __future__ import annotations

import asyncio
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest

from contrast.crypto.ownerkeys import load_seedshare_owner_key, public_key_hex
from contrast.crypto.seedshare import make_seed_shares
from contrast.runtime.natsserver import NatsServer
from tests.cli.owner.owner_cli import POLICY_FILES, Cli, write_manifest
from tests.services.manifest.mfs_helpers import replica

COMMANDS = {
    "verify": ["verify"],
    "set": ["set", *POLICY_FILES],
    "sign": ["sign"],
    "recover": ["recover"],
}


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unreachable_nats_is_named_without_a_traceback(
    command: str, workspace: Path, emulator_dir: Path, keys: dict[str, Any]
) -> None:
    write_manifest(workspace, emulator_dir, keys)
    owner = load_seedshare_owner_key(workspace / "seedshare-owner.pem")
    shares = make_seed_shares(secrets.token_bytes(64), secrets.token_bytes(32), [public_key_hex(owner)])
    (workspace / "seed-shares.json").write_bytes(shares.encode())
    cli = Cli(workspace, f"nats://127.0.0.1:{closed_port()}")
    rc, out, err = cli(*COMMANDS[command], timeout=5)
    assert (rc, out["code"]) == (3, "state.unreachable"), (out, err)
    assert "connection refused" in out["message"]
    assert "--nats" in out["hint"]
    assert "Traceback" not in err
    rc, stdout, stderr = cli.text(*COMMANDS[command], timeout=5)
    assert rc == 3
    assert f"contrast {command}: unavailable: state.unreachable: cannot connect to NATS" in stderr
    assert "Traceback" not in stdout + stderr


@pytest.mark.parametrize(
    ("url", "rc", "code", "says"),
    [
        ("nats://coordinator.invalid:4222", 3, "state.unreachable", "cannot resolve the host name"),
        ("nats://127.0.0.1:99999", 2, "usage", "is not a NATS URL"),
        ("http://127.0.0.1:4222", 2, "usage", "is not a NATS URL"),
    ],
)
def test_a_url_that_names_no_server_is_said_so(
    url: str, rc: int, code: str, says: str, workspace: Path, emulator_dir: Path, keys: dict[str, Any]
) -> None:
    """A host that does not resolve is unreachable (exit 3); a URL that cannot name a server is the owner's
    typo (exit 2), not a missing server."""
    write_manifest(workspace, emulator_dir, keys)
    got_rc, out, err = Cli(workspace, url)("verify", timeout=5)
    assert (got_rc, out["code"]) == (rc, code), (out, err)
    assert says in out["message"]
    assert "Traceback" not in err


async def test_a_coordinator_that_needs_recovery_says_so_at_once(
    cli: Cli, workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    """Every replica restarted: stale, with no ready peer to recover from. ``verify`` and ``set`` do not wait
    for the minute of ``--timeout`` (that would end in ``state.unavailable``): only a recovery helps."""
    write_manifest(workspace, emulator_dir, keys)
    write_manifest(workspace, emulator_dir, keys, name="v2.json", db_sans=["db", "v2"])
    async with replica(private_nats.url, emulator_dir, "m1"):
        rc, _, err = await asyncio.to_thread(cli, "set", "-m", "manifest.json", *COMMANDS["set"][1:])
        assert rc == 0, err
    async with replica(private_nats.url, emulator_dir, "m2"):
        for argv in (["verify", "-m", "manifest.json"], ["set", "-m", "v2.json", *COMMANDS["set"][1:]]):
            rc, out, _ = await asyncio.to_thread(cli, *argv, timeout=60)
            assert (rc, out["code"]) == (3, "state.recovery_needed"), out
            assert "contrast recover" in out["hint"]
