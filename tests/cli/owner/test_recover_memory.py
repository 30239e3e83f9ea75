"""`contrast recover` checks the trusted state of `contrast verify` before it seals the seed (DK6).

End to end: real replica processes on a real nats-server, the store restored to an earlier snapshot through
JetStream as its operator would, and a spy on the step-2 subject that proves nothing was sent on a refusal.
The pure checks of the attested head after recovery are tested as a model. The race (the store swapped
after the challenge) is in ``test_recover_race.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contrast import subjects
from contrast.cli.trusted_state import (
    TrustedState,
    VerifyError,
    check_recovered_head,
    check_recovery_root,
    decode_state,
    observed_state,
)
from contrast.coordinator.history import ZERO_HASH, Transition
from contrast.runtime.natsserver import NatsServer
from tests.cli.owner.history_store import rechained, replace_history, snapshot_history
from tests.cli.owner.owner_cli import POLICY_FILES, Cli, write_manifest
from tests.services.manifest.mfs_helpers import StateWatch, start_replica_process


async def test_recover_refuses_a_restored_snapshot_and_seals_nothing(
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
    sealed: list[bytes] = []  # every step-2 message (the sealed seed) that reaches any replica

    async def on_step2(msg: Any) -> None:
        sealed.append(msg.data)

    await nc.subscribe(f"{subjects.USER_RECOVER}.*", cb=on_step2)
    await nc.flush()
    state = workspace / "verify" / "trusted-state.json"

    async def run(*args: str) -> tuple[int, dict[str, Any], str]:
        return await asyncio.to_thread(cli, *args)

    proc = start_replica_process(emulator_dir, url, "m1", tmp_path)
    try:
        write_manifest(workspace, emulator_dir, keys, name="v1.json")
        assert (await run("set", "-m", "v1.json", *POLICY_FILES))[0] == 0
        rc, _, err = await run("verify", "-m", "v1.json")
        assert rc == 0, err
        at_generation_1 = state.read_bytes()
        generation_1 = await snapshot_history(url)
        write_manifest(workspace, emulator_dir, keys, name="v2.json", db_sans=["db", "v2"])
        assert (await run("set", "-m", "v2.json", *POLICY_FILES))[0] == 0
        rc, out, err = await run("verify", "-m", "v2.json")
        assert (rc, out["generation"]) == (0, 2), err
        at_generation_2 = state.read_bytes()
        cas = {f: (workspace / f).read_bytes() for f in ("coordinator-root-ca.pem", "mesh-ca.pem")}

        # Every replica restarts on the consistent snapshot of generation 1 (the pointer's KV history purged).
        proc.kill()
        await replace_history(url, generation_1)
        proc = start_replica_process(emulator_dir, url, "m1", tmp_path)
        await watch.wait("m1", "stale")

        # The owner verified generation 2: the seed is not handed to a store that went back to 1.
        rc, out, _ = await run("recover", "-m", "v1.json")
        assert (rc, out["code"]) == (1, "verify.rollback")

        second = decode_state(at_generation_2)
        other_root = json.loads(at_generation_2) | {"root_ca_sha256": "ef" * 32}
        for content, code in [
            (at_generation_2[: len(at_generation_2) // 2], "verify.state_corrupt"),  # never "first use"
            # A memory with another manifest at generation 1.
            (rechained(second, ["cd" * 32]), "verify.history_forked"),
            # A memory of another deployment: caught from the seed alone, before the network.
            (json.dumps(other_root).encode(), "verify.root_changed"),
        ]:
            state.write_bytes(content)
            rc, out, _ = await run("recover", "-m", "v1.json")
            assert (rc, out["code"]) == (1, code)
            assert "--accept-new-root" not in out["hint"]  # a flag that recover does not have
            assert state.read_bytes() == content
        await nc.flush()
        assert sealed == []
        assert {f: (workspace / f).read_bytes() for f in cas} == cas
        assert watch.states["m1"][0] == "stale"

        # The memory of generation 1 (the owner never verified 2 in this workspace): the store matches it,
        # and recovery works as before. The trusted state is checked, not written.
        state.write_bytes(at_generation_1)
        rc, out, err = await run("recover", "-m", "v1.json")
        assert rc == 0, err
        assert out["generation"] == 1
        assert out["trusted_state"] | {"path": ""} == {
            "path": "",
            "status": "unchanged",
            "recorded_generation": 1,
            "checked_generation": 1,
            "written": False,
        }
        await watch.wait("m1", "ready")
        await nc.flush()
        assert len(sealed) == 1
        assert state.read_bytes() == at_generation_1
        assert (workspace / "coordinator-root-ca.pem").read_bytes() == cas["coordinator-root-ca.pem"]
        rc, out, err = await run("verify", "-m", "v1.json")
        assert (rc, out["trusted_state"]["status"]) == (0, "unchanged"), err
    finally:
        proc.kill()
        await nc.close()


# ---- the pure checks ---------------------------------------------------------------------------------------

ROOT = b"root certificate (DER)"


def chain(manifests: list[bytes]) -> tuple[list[bytes], TrustedState]:
    transitions, previous = [], ZERO_HASH
    for h in manifests:
        previous = Transition(manifest_hash=h, previous=previous).hash
        transitions.append(previous)
    return transitions, observed_state(
        root_ca_der=ROOT,
        transitions=transitions,
        manifests=manifests,
        verified_at=dt.datetime(2026, 11, 29, tzinfo=dt.UTC),
    )


def test_the_seed_must_derive_the_recorded_root() -> None:
    _, recorded = chain([hashlib.sha256(b"m1").digest()])
    check_recovery_root(recorded, ROOT)
    with pytest.raises(VerifyError) as e:
        check_recovery_root(recorded, b"another deployment's root (DER)")
    assert e.value.code == "verify.root_changed"


manifest_names = st.lists(st.sampled_from([b"a", b"b", b"c"]), min_size=1, max_size=6)


@given(
    names=manifest_names,
    other=manifest_names,
    data=st.data(),
)
def test_only_the_checked_head_is_accepted_after_recovery(
    names: list[bytes], other: list[bytes], data: st.DataObject
) -> None:
    """Model: recorded ⊑ checked (what passed before sealing); the replica attests some head of either chain.

    Accepted iff it is the checked head; refused as a rollback iff it is older than the recorded head, as a
    fork iff it differs at the recorded generation; without a recorded state any other head has "moved".
    """
    manifests = [hashlib.sha256(n).digest() for n in names]
    transitions, _ = chain(manifests)
    recorded_gen = data.draw(st.integers(1, len(manifests)), label="recorded generation")
    checked_gen = data.draw(st.integers(recorded_gen, len(manifests)), label="checked generation")
    _, remembered = chain(manifests[:recorded_gen])
    recorded = data.draw(st.sampled_from([remembered, None]), label="recorded state")
    _, checked = chain(manifests[:checked_gen])
    other_transitions, _ = chain([hashlib.sha256(n).digest() for n in other])
    source = data.draw(st.sampled_from([transitions, other_transitions]), label="recovered chain")
    generation = data.draw(st.integers(1, len(source)), label="recovered generation")
    head = source[generation - 1]

    if (generation, head.hex()) == (checked.generation, checked.head):
        check_recovered_head(recorded, checked, generation=generation, transition_hash=head)
        return
    with pytest.raises(VerifyError) as e:
        check_recovered_head(recorded, checked, generation=generation, transition_hash=head)
    if recorded is not None and generation < recorded.generation:
        assert e.value.code == "verify.rollback"
    elif recorded is not None and generation == recorded.generation and head.hex() != recorded.head:
        assert e.value.code == "verify.history_forked"
    else:
        assert e.value.code == "verify.history_moved"
