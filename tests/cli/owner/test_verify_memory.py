"""`contrast verify` remembers the history it verified (DK6) and can require approved manifests (CP12).

Real replica processes on a real nats-server; the store is rolled back and wiped through JetStream as the
operator who runs NATS would do it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from contrast.cli.trusted_state import TrustedState, decode_state
from contrast.runtime.natsserver import NatsServer
from tests.cli.owner.history_store import rechained, replace_history, snapshot_history
from tests.cli.owner.owner_cli import POLICY_FILES, Cli, write_manifest
from tests.services.manifest.mfs_helpers import Proc, StateWatch, start_replica_process


def state_of(path: Path) -> TrustedState:
    return decode_state(path.read_bytes())


def files_of(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``directory`` with its bytes and modification time: a rewrite changes the time."""
    return {
        str(f.relative_to(directory)): (f.read_bytes(), f.stat().st_mtime_ns)
        for f in sorted(directory.rglob("*"))
        if f.is_file()
    }


def test_verify_records_extends_and_requires_approved_manifests(
    cli: Cli,
    workspace: Path,
    emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
    tmp_path: Path,
) -> None:
    """First use records, an update extends; a forged memory is refused; ``--approved`` (CP12).

    Generation 1 plays the operator's manifest that won the first set; generation 2 is the owner's.
    """
    proc = start_replica_process(emulator_dir, private_nats.url, "m1", tmp_path)
    state = workspace / "verify" / "trusted-state.json"
    try:
        write_manifest(workspace, emulator_dir, keys, name="v1.json", db_sans=["db", "exfil.example"])
        assert cli("set", "-m", "v1.json", *POLICY_FILES)[0] == 0
        rc, out, err = cli("verify", "-m", "v1.json")
        assert rc == 0, err
        assert out["trusted_state"]["status"] == "first_use"
        first = state_of(state)
        assert first.generation == 1
        assert first.head == out["transition_hash"]
        root = x509.load_pem_x509_certificate((workspace / "verify" / "coordinator-root-ca.pem").read_bytes())
        assert first.root_ca_sha256 == hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest()

        write_manifest(workspace, emulator_dir, keys)
        assert cli("set", "-m", "manifest.json", *POLICY_FILES)[0] == 0
        # The owner approves only their own manifest: the foreign generation 1 is named and refused.
        approved = workspace / "approved"
        approved.mkdir()
        shutil.copy(workspace / "manifest.json", approved / "owner-v1.json")
        rc, out, _ = cli("verify", "-m", "manifest.json", "--approved", "approved", "--state", "s.json")
        assert (rc, out["code"]) == (1, "verify.unapproved_history")
        assert "generation 1" in out["message"]
        assert not (workspace / "s.json").exists()

        rc, out, err = cli("verify", "-m", "manifest.json")
        assert rc == 0, err
        status = out["trusted_state"]
        assert (status["status"], status["recorded_generation"], status["written"]) == ("extended", 1, True)
        assert out["unreviewed_generations"] == []  # 1 was verified before; 2 is the local manifest
        second = state_of(state)
        assert second.generation == 2
        assert second.transitions[0] == first.transitions[0]
        assert second.head == out["transition_hash"]
        good = state.read_bytes()

        # What the trusted state records counts as approved: generation 1 was verified (and recorded) before.
        rc, out, err = cli("verify", "-m", "manifest.json", "--approved", "approved")
        assert rc == 0, err
        assert out["approved"] == ["recorded", "owner-v1.json"]
        assert out["trusted_state"]["status"] == "unchanged"
        good = state.read_bytes()

        # A local manifest that is not the active one: rejected, and nothing in verify/ is written, the
        # memory included; the text names the code too.
        before = files_of(workspace / "verify")
        rc, out, _ = cli("verify", "-m", "v1.json")
        assert (rc, out["code"]) == (1, "verify.manifest_mismatch")
        assert out["written"] is False
        rc, stdout, _ = cli.text("verify", "-m", "v1.json")
        assert rc == 1
        assert "REJECTED: verify.manifest_mismatch: " in stdout
        assert "nothing was written" in stdout
        assert files_of(workspace / "verify") == before

        for content, code in [
            # The memory knows a newer generation than the Coordinator serves: a rollback.
            (rechained(second, [*second.manifests, "ab" * 32]), "verify.rollback"),
            # The memory has another manifest at a recorded generation: a fork.
            (rechained(second, ["cd" * 32, second.manifests[1]]), "verify.history_forked"),
            (good[: len(good) // 2], "verify.state_corrupt"),
        ]:
            state.write_bytes(content)
            before = files_of(workspace / "verify")
            rc, out, _ = cli("verify", "-m", "manifest.json")
            assert (rc, out["code"]) == (1, code)
            assert files_of(workspace / "verify") == before

        # The memory names another root CA (the real wipe is in the slow test below): refused unless the
        # owner accepts the new root, which is loud, and then the memory starts over from this history.
        other_root = json.loads(good)
        other_root["root_ca_sha256"] = "ef" * 32
        state.write_bytes(json.dumps(other_root).encode())
        rc, out, _ = cli("verify", "-m", "manifest.json")
        assert (rc, out["code"]) == (1, "verify.root_changed")
        rc, out, err = cli("verify", "-m", "manifest.json", "--accept-new-root")
        assert rc == 0, err
        assert out["trusted_state"]["status"] == "new_root_accepted"
        assert out["trusted_state"]["previous_root_ca_sha256"] == "ef" * 32
        assert err.count("NEW ROOT CA ACCEPTED") == 1
        assert state_of(state).transitions == second.transitions
        assert state_of(state).root_ca_sha256 == second.root_ca_sha256
        # The warning is printed once in text too (on stderr), not repeated in the report.
        state.write_bytes(json.dumps(other_root).encode())
        rc, stdout, stderr = cli.text("verify", "-m", "manifest.json", "--accept-new-root")
        assert rc == 0, stderr
        assert (stdout + stderr).count("NEW ROOT CA ACCEPTED") == 1
    finally:
        proc.terminate()


async def test_a_restored_snapshot_is_refused_as_a_rollback(
    cli: Cli,
    workspace: Path,
    emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
    tmp_path: Path,
) -> None:
    """DK6 end to end: the operator restores generation 1 after every replica restarted."""
    url = private_nats.url
    nc = await nats.connect(url)
    watch = await StateWatch().start(nc)
    state = workspace / "verify" / "trusted-state.json"

    async def run(*args: str) -> tuple[int, dict[str, Any], str]:
        return await asyncio.to_thread(cli, *args)

    async def restart(proc: Proc, state_name: str) -> Proc:
        proc.kill()
        proc = start_replica_process(emulator_dir, url, "m1", tmp_path)
        await watch.wait("m1", state_name)
        return proc

    proc = start_replica_process(emulator_dir, url, "m1", tmp_path)
    try:
        write_manifest(workspace, emulator_dir, keys, name="v1.json")
        assert (await run("set", "-m", "v1.json", *POLICY_FILES))[0] == 0
        generation_1 = await snapshot_history(url)
        write_manifest(workspace, emulator_dir, keys, name="v2.json", db_sans=["db", "v2"])
        assert (await run("set", "-m", "v2.json", *POLICY_FILES))[0] == 0
        # First use of a two-manifest history without --approved: generation 1 is flagged for review, once.
        rc, stdout, stderr = await asyncio.to_thread(cli.text, "verify", "-m", "v2.json", "--state", "x.json")
        assert rc == 0, stderr
        assert (stdout + stderr).count("WARNING: generation(s) 1 ") == 1
        rc, out, err = await run("verify", "-m", "v2.json")
        assert (rc, out["generation"]) == (0, 2), err
        assert out["unreviewed_generations"] == [1]
        assert err.count("WARNING: generation(s) 1 ") == 1
        good = state.read_bytes()
        cas = {f: (workspace / f).read_bytes() for f in ("coordinator-root-ca.pem", "mesh-ca.pem")}

        # Every replica restarts on a consistent earlier snapshot; the seed-share owner recovers it, and the
        # Coordinator serves generation 1, genuinely signed and attested.
        proc.kill()
        await replace_history(url, generation_1)
        proc = await restart(proc, "stale")
        # A seed-share owner without memory recovers it (with memory, recover refuses: test_recover_memory).
        # Checked against another state than the workspace's own, it leaves the workspace's CA files alone.
        rc, out, err = await run("recover", "-m", "v1.json", "--state", "no-memory.json")
        assert rc == 0, err
        assert out["trusted_state"]["status"] == "first_use"
        assert out["files"] == []
        assert {f: (workspace / f).read_bytes() for f in cas} == cas
        rc, out, err = await run("verify", "-m", "v1.json", "--state", "fresh.json")
        assert (rc, out["generation"]) == (0, 1), err  # without memory it would pass
        rc, out, _ = await run("verify", "-m", "v1.json")
        assert (rc, out["code"]) == (1, "verify.rollback")
        assert state.read_bytes() == good
    finally:
        proc.kill()
        await nc.close()


@pytest.mark.slow  # the default run covers root_changed with a forged memory in the first test
async def test_a_wiped_store_is_refused_unless_the_new_root_is_accepted(
    cli: Cli,
    workspace: Path,
    emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
    tmp_path: Path,
) -> None:
    url = private_nats.url
    nc = await nats.connect(url)
    watch = await StateWatch().start(nc)
    state = workspace / "verify" / "trusted-state.json"

    async def run(*args: str) -> tuple[int, dict[str, Any], str]:
        return await asyncio.to_thread(cli, *args)

    proc = start_replica_process(emulator_dir, url, "m1", tmp_path)
    try:
        write_manifest(workspace, emulator_dir, keys, name="v2.json")
        assert (await run("set", "-m", "v2.json", *POLICY_FILES))[0] == 0
        rc, out, err = await run("verify", "-m", "v2.json")
        assert rc == 0, err
        good = state.read_bytes()

        # The operator wipes the store: a fresh deployment with a new root CA.
        proc.kill()
        await replace_history(url, {})
        proc = start_replica_process(emulator_dir, url, "m1", tmp_path)
        await watch.wait("m1", "uninitialized")
        rc, out, _ = await run("set", "-m", "v2.json", *POLICY_FILES)
        assert (rc, out["code"]) == (1, "verify.history_lost")
        rc, out, _ = await run("verify", "-m", "v2.json")
        assert (rc, out["code"]) == (1, "verify.history_lost")
        rc, _, err = await run("set", "-m", "v2.json", *POLICY_FILES, "--accept-new-root")
        assert rc == 0, err
        rc, out, _ = await run("verify", "-m", "v2.json")
        assert (rc, out["code"]) == (1, "verify.root_changed")
        assert state.read_bytes() == good
        rc, out, err = await run("verify", "-m", "v2.json", "--accept-new-root")
        assert (rc, out["trusted_state"]["status"]) == (0, "new_root_accepted"), err
        assert state_of(state).generation == 1
        assert state_of(state).root_ca_sha256 != decode_state(good).root_ca_sha256
    finally:
        proc.kill()
        await nc.close()
