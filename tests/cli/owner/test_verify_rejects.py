"""`contrast verify` rejects a Coordinator whose evidence does not match the local manifest."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import nats
import pytest

from contrast import subjects
from contrast.runtime import request
from contrast.runtime.natsserver import NatsServer
from contrast.wire.v1 import AttestedReply, GetManifestRequest, SetManifestRequest, encode
from tests.cli.owner.owner_cli import Cli, write_manifest
from tests.services.manifest.mfs_helpers import H_DB, H_VERIFIER, POLICIES, emulator, replica


@pytest.fixture(scope="module")
def other_emulator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second emulated platform: its own ARK, which the manifest does not name."""
    root = tmp_path_factory.mktemp("other-emulator")
    emulator(root)
    return root


async def _set(url: str, manifest: bytes) -> None:
    nc = await nats.connect(url)
    try:
        req = SetManifestRequest(
            nonce=secrets.token_bytes(32), manifest=manifest, policies=list(POLICIES.values())
        )
        await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=20)
    finally:
        await nc.close()


async def test_wrong_policy_hash(
    cli: Cli, workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    """The replica runs the *workload* policy: HOST_DATA is in the manifest, but not as a coordinator."""
    manifest = write_manifest(workspace, emulator_dir, keys)
    async with replica(private_nats.url, emulator_dir, "m1", policy_hash=H_DB):
        await _set(private_nats.url, manifest.read_bytes())
        rc, out, _ = await asyncio.to_thread(cli, "verify", "-m", "manifest.json")
    assert (rc, out["code"]) == (1, "policy.not_coordinator")
    assert not (workspace / "verify").exists()


async def test_a_verifier_policy_does_not_speak_for_the_coordinator(
    cli: Cli, workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    """A Coordinator policy of the manifest, but bound to the verifier role, answers `verify`: refused, and
    nothing is written."""
    manifest = write_manifest(workspace, emulator_dir, keys)
    async with replica(private_nats.url, emulator_dir, "m1", policy_hash=H_VERIFIER):
        await _set(private_nats.url, manifest.read_bytes())
        rc, out, _ = await asyncio.to_thread(cli, "verify", "-m", "manifest.json")
    assert (rc, out["code"]) == (1, "policy.wrong_coordinator_role")
    assert not (workspace / "verify").exists()


async def test_untrusted_root(
    cli: Cli,
    workspace: Path,
    emulator_dir: Path,
    other_emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
) -> None:
    manifest = write_manifest(workspace, emulator_dir, keys)
    async with replica(private_nats.url, other_emulator_dir, "m1"):
        await _set(private_nats.url, manifest.read_bytes())
        rc, out, _ = await asyncio.to_thread(cli, "verify", "-m", "manifest.json")
    assert rc == 1
    assert out["code"] == "evidence.untrusted_root", out
    assert not (workspace / "verify").exists()


async def test_replayed_reply(
    cli: Cli, workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    """A genuine, attested reply captured from the bus and replayed to another request is refused."""
    manifest = write_manifest(workspace, emulator_dir, keys)
    nc = await nats.connect(private_nats.url)
    try:
        async with replica(private_nats.url, emulator_dir, "m1"):
            await _set(private_nats.url, manifest.read_bytes())
            captured = await nc.request(
                subjects.USER_MANIFEST_GET,
                encode(GetManifestRequest(nonce=secrets.token_bytes(32))),
                timeout=10,
            )
            rc, out, err = await asyncio.to_thread(cli, "verify", "-m", "manifest.json")
            assert rc == 0, err  # the genuine Coordinator passes

        # The Coordinator is gone; the "bus" answers every get with the captured reply.
        async def replay(msg: Any) -> None:
            await msg.respond(captured.data)

        sub = await nc.subscribe(subjects.USER_MANIFEST_GET, queue="q", cb=replay)
        rc, out, _ = await asyncio.to_thread(cli, "verify", "-m", "manifest.json")
        await sub.unsubscribe()
        assert (rc, out["code"]) == (1, "policy.report_data_mismatch"), json.dumps(out)
    finally:
        await nc.close()
