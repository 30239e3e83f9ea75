"""The recovery race of threat DK6: the store swapped between the challenge and the sealed seed.

Real replica processes on a real nats-server; the CLI runs as a user runs it, through a proxy that plays the
operator's network: it holds the step-2 message (the sealed seed) while the test restores an earlier
snapshot of the store, or forges the head in the challenge on its way to the CLI.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import nats

from contrast import subjects
from contrast.coordinator.history import transition_key
from contrast.coordinator.recovery_head import pointer_head
from contrast.runtime.natsserver import NatsServer
from contrast.wire.v1 import RecoveryChallenge, decoder, encode
from tests.cli.owner.history_store import replace_history, snapshot_history
from tests.cli.owner.nats_proxy import NatsProxy
from tests.cli.owner.owner_cli import POLICY_FILES, Cli, write_manifest
from tests.services.manifest.mfs_helpers import StateWatch, start_replica_process


def stored_head(snapshot: dict[str, bytes]) -> tuple[bytes, list[bytes]]:
    """The latest pointer and the transition records (oldest first) of a snapshot of the history bucket."""
    pointer = snapshot["latest"]
    h, generation = pointer_head(pointer)
    records = []
    for _ in range(generation):
        records.append(snapshot[transition_key(h)])
        h = records[-1][32:]
    return pointer, records[::-1]


async def test_a_store_swapped_after_the_challenge_is_not_adopted(
    workspace: Path,
    emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
    tmp_path: Path,
) -> None:
    url = private_nats.url
    nc = await nats.connect(url)
    watch = await StateWatch().start(nc)
    sealed: list[bytes] = []  # every step-2 message (the sealed seed) that reaches the server

    async def on_step2(msg: Any) -> None:
        sealed.append(msg.data)

    await nc.subscribe(f"{subjects.USER_RECOVER}.*", cb=on_step2)
    await nc.flush()
    cli = Cli(workspace, url)

    async def run(via: Cli, *args: str) -> tuple[int, dict[str, Any], str]:
        return await asyncio.to_thread(via, *args)

    proc = start_replica_process(emulator_dir, url, "m1", tmp_path)
    proxies: list[NatsProxy] = []

    async def through(proxy: NatsProxy) -> Cli:
        proxies.append(proxy)
        return Cli(workspace, await proxy.start())

    upstream = ("127.0.0.1", private_nats.port)
    try:
        write_manifest(workspace, emulator_dir, keys, name="v1.json")
        assert (await run(cli, "set", "-m", "v1.json", *POLICY_FILES))[0] == 0
        rc, _, err = await run(cli, "verify", "-m", "v1.json")
        assert rc == 0, err
        state = workspace / "verify" / "trusted-state.json"
        at_generation_1 = state.read_bytes()
        generation_1 = await snapshot_history(url)
        write_manifest(workspace, emulator_dir, keys, name="v2.json", db_sans=["db", "v2"])
        assert (await run(cli, "set", "-m", "v2.json", *POLICY_FILES))[0] == 0
        rc, out, err = await run(cli, "verify", "-m", "v2.json")
        assert (rc, out["generation"]) == (0, 2), err
        generation_2 = await snapshot_history(url)

        # Every replica restarts on the genuine store of generation 2: stale, and recover would pass.
        proc.kill()
        proc = start_replica_process(emulator_dir, url, "m1", tmp_path)
        await watch.wait("m1", "stale")

        # The race: the challenge attests generation 2, recover checks it and seals the seed to it; the
        # operator holds that message, restores the snapshot of generation 1, and lets it go.
        holding = NatsProxy(*upstream, hold_prefix=f"{subjects.USER_RECOVER}.".encode())
        racer = await through(holding)
        attempt = asyncio.create_task(run(racer, "recover", "-m", "v1.json"))
        held = asyncio.create_task(holding.held.wait())
        await asyncio.wait({attempt, held}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert held.done(), attempt.result() if attempt.done() else "step 2 never came"
        await replace_history(url, generation_1)
        holding.release.set()
        rc, out, _ = await attempt
        assert (rc, out["code"]) == (1, "state.recovery_head_changed")
        await nc.flush()
        assert len(sealed) == 1  # the seed went to the attested replica, which refused to adopt the swap

        # The replica stayed stale and answers with the swapped head, which recover now refuses unsent.
        assert watch.states["m1"][0] == "stale"
        rc, out, _ = await run(cli, "recover", "-m", "v2.json")
        assert (rc, out["code"]) == (1, "verify.rollback")

        # A forged head in transit: the challenge claims the genuine, signed generation 2 while the
        # replica read generation 1. The evidence does not bind it, and nothing is sent.
        pointer, transitions = stored_head(generation_2)

        def forge(data: bytes) -> bytes | None:
            try:
                challenge = decoder(RecoveryChallenge).decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return None
            forged = msgspec.structs.replace(challenge, head_pointer=pointer, head_transitions=transitions)
            return encode(forged)

        forging = NatsProxy(*upstream, rewrite=forge)
        rc, out, _ = await run(await through(forging), "recover", "-m", "v2.json")
        assert (rc, out["code"]) == (1, "policy.report_data_mismatch")
        assert forging.rewritten >= 1
        await nc.flush()
        assert len(sealed) == 1
        assert watch.states["m1"][0] == "stale"

        # A normal recover adopts exactly the checked head: here the store of generation 1, for an owner
        # whose memory is generation 1 (a restored store of generation 2 would lack its pointer's KV history).
        state.write_bytes(at_generation_1)
        rc, out, err = await run(cli, "recover", "-m", "v1.json")
        assert rc == 0, (out, err)
        assert (out["generation"], out["trusted_state"]["status"]) == (1, "unchanged")
        assert out["transition_hash"] == pointer_head(generation_1["latest"])[0].hex()
        await watch.wait("m1", "ready")
        assert len(sealed) == 2
        rc, out, err = await run(cli, "verify", "-m", "v1.json")
        assert (rc, out["generation"]) == (0, 1), err
    finally:
        for p in proxies:
            await p.close()
        proc.kill()
        await nc.close()
