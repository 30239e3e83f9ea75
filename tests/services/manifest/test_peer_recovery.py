"""Several manifest replicas as real processes: restart makes them stale, a new one recovers from a peer."""

from __future__ import annotations

import secrets
from pathlib import Path

import nats
import pytest

from contrast import subjects
from contrast.errors import ContrastError
from contrast.runtime import request
from contrast.wire.v1 import AttestedReply, GetManifestRequest, SetManifestRequest
from tests.services.manifest.mfs_helpers import (
    POLICIES,
    StateWatch,
    encode,
    manifest_obj,
    start_replica_process,
)


async def test_three_replicas_new_one_recovers_from_a_peer(
    private_nats, emulator_dir: Path, tmp_path: Path
) -> None:
    nc = await nats.connect(private_nats.url)
    watch = await StateWatch().start(nc)
    procs = [start_replica_process(emulator_dir, private_nats.url, f"m{i}", tmp_path) for i in (1, 2, 3)]
    try:
        for p in procs:
            await watch.wait(p.name, "uninitialized")
        req = SetManifestRequest(
            nonce=secrets.token_bytes(32),
            manifest=encode(manifest_obj(emulator_dir)),
            policies=list(POLICIES.values()),
        )
        first = await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=20)
        # The two others see a history they hold no seed for, and join the replica that made it.
        for p in procs:
            assert (await watch.wait(p.name, "ready"))[1] == 1
        procs[1].kill()
        newcomer = start_replica_process(emulator_dir, private_nats.url, "m4", tmp_path)
        procs.append(newcomer)
        state = await watch.wait("m4", "ready")
        assert state[1] == 1
        # Every ready replica serves the same CAs: the mesh key travelled with the seed.
        for _ in range(6):
            g = await request(
                nc,
                subjects.USER_MANIFEST_GET,
                GetManifestRequest(nonce=secrets.token_bytes(32)),
                AttestedReply,
            )
            assert (g.root_ca, g.mesh_ca) == (first.root_ca, first.mesh_ca)
    finally:
        for p in procs:
            p.kill()
        await nc.close()


@pytest.mark.slow  # the same path runs by default in tests/cli/owner/test_recovery.py
async def test_restart_of_every_replica_leaves_them_stale(
    private_nats, emulator_dir: Path, tmp_path: Path
) -> None:
    nc = await nats.connect(private_nats.url)
    watch = await StateWatch().start(nc)
    proc = start_replica_process(emulator_dir, private_nats.url, "m1", tmp_path)
    try:
        await watch.wait("m1", "uninitialized")
        req = SetManifestRequest(
            nonce=secrets.token_bytes(32),
            manifest=encode(manifest_obj(emulator_dir)),
            policies=list(POLICIES.values()),
        )
        await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=20)
        proc.kill()
        proc = start_replica_process(emulator_dir, private_nats.url, "m1", tmp_path)
        await watch.wait("m1", "stale")
        with pytest.raises(ContrastError) as e:
            await request(
                nc,
                subjects.USER_MANIFEST_GET,
                GetManifestRequest(nonce=secrets.token_bytes(32)),
                AttestedReply,
            )
        # No ready peer to recover from: the replica says that only a recovery helps.
        assert e.value.code == "state.recovery_needed"
    finally:
        proc.kill()
        await nc.close()
