"""`contrast set` changes nothing it should not: a wiped store is named, a seed share is never overwritten,
the Coordinator is attested before the manifest is sent, and a refusal after sending says what may have
changed.

The CLI runs as a user runs it (a subprocess) against manifest replicas on a real nats-server; the store is
wiped through JetStream as its operator would, and the bus is played by a relay between two nats-servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.msg import Msg

from contrast import subjects
from contrast.crypto.ownerkeys import generate_workload_owner_key, private_key_pem
from contrast.errors import ContrastError
from contrast.runtime import request
from contrast.runtime.endpoint import ERROR_CODE_HEADER
from contrast.runtime.natsserver import NatsServer
from contrast.wire.v1 import (
    AttestedReply,
    ErrorReply,
    GetManifestRequest,
    SetManifestRequest,
    StatusRequest,
    decoder,
    encode,
)
from tests.cli.owner.history_store import replace_history
from tests.cli.owner.owner_cli import POLICY_FILES, Cli, write_manifest
from tests.services.manifest.mfs_helpers import H_DB, fresh_nats, replica


async def coordinator_state(url: str) -> str:
    """What a plain ``get`` says: ``ready``, or the code of the refusal (e.g. ``state.uninitialized``)."""
    nc = await nats.connect(url)
    try:
        req = GetManifestRequest(nonce=secrets.token_bytes(32))
        await request(nc, subjects.USER_MANIFEST_GET, req, AttestedReply, timeout=20)
        return "ready"
    except ContrastError as e:
        return e.code
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def spy(url: str, subject: str) -> AsyncIterator[list[bytes]]:
    """Every message sent on ``subject`` (a plain subscriber gets a copy of what the queue group gets)."""
    seen: list[bytes] = []
    nc = await nats.connect(url)

    async def on_msg(msg: Msg) -> None:
        seen.append(msg.data)

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    try:
        yield seen
    finally:
        await nc.flush()
        await nc.close()


Answer = tuple[bytes, dict[str, str] | None]  # data and headers


@contextlib.asynccontextmanager
async def relay(
    front_url: str,
    back_url: str,
    tamper: Callable[[str, Answer], Answer | None],
    before: Callable[[str], Awaitable[None]] | None = None,
) -> AsyncIterator[list[str]]:
    """The bus as its operator runs it: user requests on ``front_url`` go to the Coordinator on ``back_url``,
    and ``tamper(subject, answer)`` decides what comes back (None: nothing); ``before(subject)`` runs before a
    request is passed on. Yields the subjects relayed."""
    front, back = await nats.connect(front_url), await nats.connect(back_url)
    relayed: list[str] = []

    async def forward(msg: Msg) -> None:
        relayed.append(msg.subject)
        if before is not None:
            await before(msg.subject)
        answer = await back.request(msg.subject, msg.data, timeout=30, headers=msg.headers)
        out = tamper(msg.subject, (answer.data, answer.headers))
        if out is not None:
            await front.publish(msg.reply, out[0], headers=out[1])

    await front.subscribe(f"{subjects.PREFIX}.user.>", cb=forward)
    await front.flush()
    try:
        yield relayed
    finally:
        await front.close()
        await back.close()


async def test_a_wiped_store_is_named_and_no_seed_share_is_overwritten(
    cli: Cli, workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    url = private_nats.url
    state = workspace / "verify" / "trusted-state.json"

    async def run(*args: str) -> tuple[int, dict[str, Any], str]:
        return await asyncio.to_thread(cli, *args)

    write_manifest(workspace, emulator_dir, keys, name="v1.json")
    write_manifest(workspace, emulator_dir, keys, name="v2.json", db_sans=["db", "v2"])
    async with replica(url, emulator_dir, "m1"):
        for manifest in ("v1.json", "v2.json"):
            assert (await run("set", "-m", manifest, *POLICY_FILES))[0] == 0
            rc, _, err = await run("verify", "-m", manifest)
            assert rc == 0, err
    share = (workspace / "seed-shares.json").read_bytes()
    recorded = state.read_bytes()

    # The operator empties the store; a replica that starts now has no history at all.
    await replace_history(url, {})
    async with replica(url, emulator_dir, "m2"):
        assert await coordinator_state(url) == "state.uninitialized"
        rc, out, _ = await run("verify", "-m", "v2.json")
        assert (rc, out["code"]) == (1, "verify.history_lost")
        assert "generation 2" in out["message"]
        assert "run `contrast set`" not in out["hint"]
        rc, stdout, stderr = await asyncio.to_thread(cli.text, "verify", "-m", "v2.json")
        assert rc == 1
        assert "refused: verify.history_lost" in stderr
        assert "run `contrast set`" not in stdout + stderr
        rc, out, _ = await run("sign", "-m", "v2.json", "-o", "v2.sig.json")
        assert (rc, out["code"]) == (1, "state.uninitialized")
        assert "run `contrast set`" not in out["hint"]

        # A first set now would make a new root CA: refused, because of the trusted state, or without it
        # because of the seed share in the workspace. Nothing is sent, nothing written.
        async with spy(url, subjects.USER_MANIFEST_SET) as sets:
            rc, out, _ = await run("set", "-m", "v2.json", *POLICY_FILES)
            assert (rc, out["code"]) == (1, "verify.history_lost")
            assert "--accept-new-root" in out["hint"]
            rc, out, _ = await run("set", "-m", "v2.json", *POLICY_FILES, "--state", "elsewhere.json")
            assert (rc, out["code"]) == (1, "verify.history_lost")
            assert "seed-shares.json" in out["message"]
        assert sets == []
        assert await coordinator_state(url) == "state.uninitialized"
        assert (workspace / "seed-shares.json").read_bytes() == share
        assert state.read_bytes() == recorded

        # Knowingly: a new deployment. Its shares get a name of their own; the old share stays as it was.
        rc, out, err = await run("set", "-m", "v2.json", *POLICY_FILES, "--accept-new-root")
        assert rc == 0, err
        assert out["generation"] == 1
        new = workspace / out["seed_shares_file"]
        assert new.name.startswith("seed-shares-")
        assert new.name in out["files"]
        assert new.stat().st_mode & 0o077 == 0
        assert new.read_bytes() != share
        assert (workspace / "seed-shares.json").read_bytes() == share
        assert any("verify --accept-new-root" in note for note in out["notes"])
        assert any(f"--seed-shares {new}" in note for note in out["notes"])
        rc, out, _ = await run("verify", "-m", "v2.json")
        assert (rc, out["code"]) == (1, "verify.root_changed")
        rc, out, err = await run("verify", "-m", "v2.json", "--accept-new-root")
        assert (rc, out["trusted_state"]["status"]) == (0, "new_root_accepted"), err


async def test_the_coordinator_is_attested_before_the_manifest_is_sent(
    cli: Cli, workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    """A replica that runs a workload policy (not a coordinator policy of this manifest) never gets it."""
    write_manifest(workspace, emulator_dir, keys)
    async with (
        replica(private_nats.url, emulator_dir, "m1", policy_hash=H_DB),
        spy(private_nats.url, subjects.USER_MANIFEST_SET) as sets,
    ):
        rc, out, _ = await asyncio.to_thread(cli, "set", "-m", "manifest.json", *POLICY_FILES)
        assert (rc, out["code"]) == (1, "policy.not_coordinator")
        assert "changed" not in out
        assert await coordinator_state(private_nats.url) == "state.uninitialized"
    assert sets == []
    assert not (workspace / "seed-shares.json").exists()


async def test_the_attested_status_is_for_this_request_and_says_uninitialized(
    workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    """What the status check stops: a status reply replayed from another request, and a forged "no history"
    (an unauthenticated error reply) that would make the owner's first set meet a ready Coordinator."""
    url = private_nats.url
    manifest = write_manifest(workspace, emulator_dir, keys)
    with fresh_nats() as front:
        via_bus = Cli(workspace, front.url)
        async with replica(url, emulator_dir, "m1"):
            nc = await nats.connect(url)
            try:
                captured = await nc.request(
                    subjects.USER_STATUS, encode(StatusRequest(nonce=secrets.token_bytes(32))), timeout=20
                )
            finally:
                await nc.close()

            def replayed(subject: str, answer: Answer) -> Answer | None:
                return (captured.data, captured.headers) if subject == subjects.USER_STATUS else answer

            async with relay(front.url, url, replayed), spy(url, subjects.USER_MANIFEST_SET) as sets:
                rc, out, _ = await asyncio.to_thread(via_bus, "set", "-m", "manifest.json", *POLICY_FILES)
            assert (rc, out["code"]) == (1, "policy.report_data_mismatch")
            assert sets == []

            # Someone else sets a manifest; the bus tells the owner there is none.
            nc = await nats.connect(url)
            try:
                first = SetManifestRequest(
                    nonce=secrets.token_bytes(32),
                    manifest=manifest.read_bytes(),
                    policies=[(workspace / p).read_bytes() for p in POLICY_FILES],
                )
                await request(nc, subjects.USER_MANIFEST_SET, first, AttestedReply, timeout=20)
            finally:
                await nc.close()
            forged = encode(ErrorReply(code="state.uninitialized", message="no manifest has been set yet"))

            def no_history(subject: str, answer: Answer) -> Answer | None:
                if subject == subjects.USER_MANIFEST_GET:
                    return forged, {ERROR_CODE_HEADER: "state.uninitialized"}
                return answer

            async with relay(front.url, url, no_history), spy(url, subjects.USER_MANIFEST_SET) as sets:
                rc, out, _ = await asyncio.to_thread(via_bus, "set", "-m", "manifest.json", *POLICY_FILES)
            assert (rc, out["code"]) == (1, "state.stale")
            assert "is ready (generation 1)" in out["message"]
            assert sets == []


async def test_a_refusal_after_the_set_was_sent_says_what_may_have_changed(
    cli: Cli, workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    """The operator's bus passes the set on, then alters the Coordinator's answer, or drops it."""
    write_manifest(workspace, emulator_dir, keys, name="v1.json")
    write_manifest(workspace, emulator_dir, keys, name="v2.json", db_sans=["db", "v2"])

    def altered(subject: str, answer: Answer) -> Answer | None:
        if subject != subjects.USER_MANIFEST_SET:
            return answer
        reply = decoder(AttestedReply).decode(answer[0])
        return encode(msgspec.structs.replace(reply, payload=reply.payload + b"\x00")), answer[1]

    def dropped(subject: str, answer: Answer) -> Answer | None:
        return None if subject == subjects.USER_MANIFEST_SET else answer

    with fresh_nats() as front:
        via_bus = Cli(workspace, front.url)
        async with replica(private_nats.url, emulator_dir, "m1"):
            async with relay(front.url, private_nats.url, altered):
                rc, out, _ = await asyncio.to_thread(via_bus, "set", "-m", "v1.json", *POLICY_FILES)
            assert (rc, out["code"]) == (1, "policy.report_data_mismatch")
            assert "may have stored it" in out["changed"]
            # It had: seen directly, the Coordinator is at generation 1.
            rc, out, err = await asyncio.to_thread(cli, "verify", "-m", "v1.json")
            assert (rc, out["generation"]) == (0, 1), err

            async with relay(front.url, private_nats.url, dropped) as relayed:
                rc, out, _ = await asyncio.to_thread(
                    via_bus, "set", "-m", "v2.json", *POLICY_FILES, timeout=5
                )
            assert (rc, out["code"]) == (3, "state.unavailable")
            assert "no answer came" in out["changed"]
            assert relayed.count(subjects.USER_MANIFEST_SET) == 1  # not sent again after no answer
            rc, out, err = await asyncio.to_thread(cli, "verify", "-m", "v2.json")
            assert (rc, out["generation"]) == (0, 2), err


async def test_an_error_reply_to_a_first_set_may_hide_a_stored_one(
    cli: Cli, workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    """The operator's bus passes the first set on and answers with a forged refusal: the Coordinator stored
    the manifest, and the seed shares in its answer never reached the owner. The CLI must not say a plain
    "refused"."""
    write_manifest(workspace, emulator_dir, keys)
    forged = encode(ErrorReply(code="internal.error", message="the store is not available"))

    def refused(subject: str, answer: Answer) -> Answer | None:
        if subject == subjects.USER_MANIFEST_SET:
            return forged, {ERROR_CODE_HEADER: "internal.error"}
        return answer

    with fresh_nats() as front:
        via_bus = Cli(workspace, front.url)
        async with replica(private_nats.url, emulator_dir, "m1"):
            async with relay(front.url, private_nats.url, refused):
                rc, _, stderr = await asyncio.to_thread(
                    via_bus.text, "set", "-m", "manifest.json", *POLICY_FILES
                )
            assert rc == 1
            assert "contrast set: refused: internal.error: the store is not available" in stderr
            assert "CHANGED: the refusal is not attested" in stderr
            assert "seed shares that did not reach you" in stderr
            # It had stored it.
            rc, out, err = await asyncio.to_thread(cli, "verify", "-m", "manifest.json")
            assert (rc, out["generation"]) == (0, 1), err
    assert not (workspace / "seed-shares.json").exists()


async def test_stray_files_a_repeated_manifest_and_a_stale_signature(
    cli: Cli, workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    url = private_nats.url

    async def run(*args: str) -> tuple[int, dict[str, Any], str]:
        return await asyncio.to_thread(cli, *args)

    write_manifest(workspace, emulator_dir, keys)
    (workspace / "stray.rego").write_bytes(b"package stray\n")
    async with replica(url, emulator_dir, "m1"):
        # A file that is no policy of the manifest is an error, not silently left out.
        rc, out, _ = await run("set", "-m", "manifest.json", *POLICY_FILES, "stray.rego")
        assert (rc, out["code"]) == (2, "usage")
        assert "stray.rego" in out["message"]
        assert await coordinator_state(url) == "state.uninitialized"
        assert (await run("set", "-m", "manifest.json", *POLICY_FILES))[0] == 0

        # The active manifest again: nothing is sent, no generation is added.
        async with spy(url, subjects.USER_MANIFEST_SET) as sets:
            rc, out, err = await run("set", "-m", "manifest.json", *POLICY_FILES)
        assert rc == 0, err
        assert (out["changed"], out["generation"]) == (False, 1)
        assert sets == []
        rc, stdout, _ = await asyncio.to_thread(cli.text, "set", "-m", "manifest.json", *POLICY_FILES)
        assert rc == 0
        assert "unchanged" in stdout

        # A detached signature made at generation 1, used after the history moved on (no --atomic).
        write_manifest(workspace, emulator_dir, keys, name="v2.json", db_sans=["db", "v2"])
        rc, _, err = await run("sign", "-m", "v2.json", "-o", "v2.sig.json")
        assert rc == 0, err
        write_manifest(workspace, emulator_dir, keys, name="v3.json", db_sans=["db", "v3"])
        assert (await run("set", "-m", "v3.json", *POLICY_FILES))[1]["generation"] == 2
        async with spy(url, subjects.USER_MANIFEST_SET) as sets:
            rc, out, _ = await run("set", "-m", "v2.json", "--signature", "v2.sig.json", *POLICY_FILES)
        assert (rc, out["code"]) == (1, "state.stale")
        assert "moved on to generation 2" in out["message"]
        assert sets == []


async def test_a_signature_overtaken_in_transit_is_named_stale(
    cli: Cli, workspace: Path, emulator_dir: Path, keys: dict[str, Any], private_nats: NatsServer
) -> None:
    """Another owner's update lands between this set's read of the head and its arrival (no --atomic): the
    Coordinator says the signature does not authorize the transition; the CLI reads the attested history
    again and says that the history moved on, instead of "not signed by a workload owner"."""
    for name, sans in [("v1.json", None), ("v2.json", ["db", "v2"]), ("v3.json", ["db", "v3"])]:
        write_manifest(workspace, emulator_dir, keys, name=name, db_sans=sans)
    overtaken: list[int] = []

    async def another_owner_first(subject: str) -> None:
        if subject == subjects.USER_MANIFEST_SET and not overtaken:
            rc, out, err = await asyncio.to_thread(cli, "set", "-m", "v3.json", *POLICY_FILES)
            assert rc == 0, err
            overtaken.append(out["generation"])

    with fresh_nats() as front:
        via_bus = Cli(workspace, front.url)
        async with replica(private_nats.url, emulator_dir, "m1"):
            assert (await asyncio.to_thread(cli, "set", "-m", "v1.json", *POLICY_FILES))[0] == 0
            async with relay(front.url, private_nats.url, lambda _, answer: answer, another_owner_first):
                rc, out, _ = await asyncio.to_thread(via_bus, "set", "-m", "v2.json", *POLICY_FILES)
            assert overtaken == [2]
            assert (rc, out["code"]) == (1, "state.stale"), out
            assert "moved on to generation 2" in out["message"]
            assert "sign" in out["hint"]
            # The refusal was true: v3 is active, v2 was not stored.
            rc, out, err = await asyncio.to_thread(cli, "verify", "-m", "v3.json")
            assert (rc, out["generation"]) == (0, 2), err

            # A signature refused while the head stayed where it was keeps its own code.
            (workspace / "other-owner.pem").write_bytes(private_key_pem(generate_workload_owner_key()))
            rc, out, _ = await asyncio.to_thread(
                cli, "set", "-m", "v2.json", *POLICY_FILES, "-w", "other-owner.pem"
            )
            assert (rc, out["code"]) == (1, "auth.not_authorized")
