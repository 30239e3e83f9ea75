"""Least-privilege NATS users on a real server: what an initializer's credentials cannot do, and that every
role can still do its whole job with only its own.

Each forbidden operation is tried twice: as the initializer on a server with the users of
:mod:`contrast.runtime.natsauth`, where it must leave the store as it was, and on the same kind of server
without users, where it must take effect. So each case is also the request that would get through if the
permission were missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from contrast import subjects
from contrast.runtime.connection import NatsCredentials, client_options
from contrast.runtime.jetstream import ensure_consumer, ensure_kv, ensure_stream
from contrast.runtime.natsauth import role_users, server_config
from contrast.runtime.natsserver import NatsServer, embedded_nats
from contrast.testing.cluster import CoordinatorCluster, Layout

SOURCE = "tenant-a"
OTHER = "tenant-b"
# The sources' nonce streams as deployed but for their age: their requests would expire within the test's 2 s.
LASTING_NONCE = {s: replace(subjects.nonce_stream(s), max_age=600.0) for s in (SOURCE, OTHER)}
OWN_NONCE, OTHER_NONCE = LASTING_NONCE[SOURCE].name, LASTING_NONCE[OTHER].name
OWN_ATTEST, OTHER_ATTEST = subjects.attest_stream(SOURCE).name, subjects.attest_stream(OTHER).name
OWN_VERIFY = subjects.verifier_consumer(SOURCE)
NAMES = ["verifier", "ca", "manifest", "owner", "monitor", subjects.DEFAULT_SOURCE, SOURCE, OTHER]


@dataclass
class Bus:
    """A server with (or without) users, holding what a running Coordinator holds."""

    server: NatsServer
    passwords: dict[str, str]
    users: bool
    errors: list[str] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)

    async def connect(self, user: str) -> Client:
        creds = NatsCredentials(user, self.passwords[user]) if self.users else None

        async def on_error(e: Exception) -> None:
            self.errors.append(str(e))

        nc = await nats.connect(self.server.url, error_cb=on_error, **client_options(creds, identity=user))
        self.clients.append(nc)
        return nc


@contextlib.asynccontextmanager
async def bus(users: bool) -> AsyncIterator[Bus]:
    passwords = {n: secrets.token_urlsafe(12) for n in NAMES}
    authorization = server_config(role_users(passwords, sources=[SOURCE, OTHER])) if users else None
    with embedded_nats(authorization=authorization) as server:
        b = Bus(server, passwords, users)
        try:
            # What the services create at start, each as its own role.
            verifier = (await b.connect("verifier")).jetstream()
            attest = [subjects.attest_stream(s) for s in (SOURCE, OTHER)]
            for stream in (*attest, subjects.VERDICTS, subjects.EVENTS, *LASTING_NONCE.values()):
                await ensure_stream(verifier, stream)
            for source in (SOURCE, OTHER):
                await ensure_consumer(verifier, subjects.verifier_consumer(source))
            for source, stream in LASTING_NONCE.items():
                await ensure_consumer(verifier, replace(subjects.nonce_consumer(source), stream=stream))
            results = await ensure_kv(verifier, subjects.RESULTS)
            await results.put("rid", b"sealed answer")
            history = await ensure_kv((await b.connect("manifest")).jetstream(), subjects.HISTORY)
            await history.put("latest", b"signed pointer")
            collateral = await ensure_kv(verifier, subjects.COLLATERAL)
            await collateral.put("vcek", b"vendor-signed certificate")
            tenant = (await b.connect(SOURCE)).jetstream()
            await tenant.publish(subjects.attest_requested(SOURCE), b"request", headers={"Nats-Msg-Id": "r1"})
            await tenant.publish(subjects.attest_nonce(SOURCE), b"nonce request")
            yield b
        finally:
            for nc in b.clients:
                with contextlib.suppress(Exception):
                    await nc.close()


async def counts(b: Bus) -> dict[str, tuple[int, int]]:
    """Messages and history depth of the streams an attacker would go for, read by the monitor."""
    js = (await b.connect("monitor")).jetstream()
    out = {}
    streams = (OWN_ATTEST, OTHER_ATTEST, OWN_NONCE, OTHER_NONCE, "VERDICTS")
    for stream in (*streams, "KV_results", "KV_history", "KV_collateral"):
        try:
            info = await js.stream_info(stream)
            out[stream] = (info.state.messages, info.config.max_msgs_per_subject)
        except Exception:
            out[stream] = (-1, -1)  # deleted
    return out


async def _quietly(aw: Awaitable[object]) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await aw


async def delete_attest(nc: Client) -> None:
    await _quietly(nc.jetstream().delete_stream(OWN_ATTEST))


async def purge_attest(nc: Client) -> None:
    await _quietly(nc.jetstream().purge_stream(OWN_ATTEST))


async def delete_nonce(nc: Client) -> None:
    await _quietly(nc.jetstream().delete_stream(OWN_NONCE))


async def purge_nonce(nc: Client) -> None:
    await _quietly(nc.jetstream().purge_stream(OWN_NONCE))


async def delete_results_bucket(nc: Client) -> None:
    await _quietly(nc.jetstream().delete_stream("KV_results"))


async def purge_history_bucket(nc: Client) -> None:
    await _quietly(nc.jetstream().purge_stream("KV_history"))


async def _reconfigure(nc: Client, stream: str, per_subject: int) -> None:
    async def update() -> None:
        config = (await nc.jetstream().stream_info(stream)).config
        config.max_msgs_per_subject = per_subject
        await nc.jetstream().update_stream(config)

    await _quietly(update())


async def shrink_history_bucket(nc: Client) -> None:
    # History 1 instead of 64: the next write erases the revision an audit would compare against.
    await _reconfigure(nc, "KV_history", 1)


async def write_history(nc: Client) -> None:
    await _quietly(nc.jetstream().publish("$KV.history.latest", b"forged pointer"))


async def write_collateral(nc: Client) -> None:
    # Re-verified on use, but a cache full of junk would send every replica to the vendor again.
    await _quietly(nc.jetstream().publish("$KV.collateral.other", b"junk"))


async def reconfigure_collateral_bucket(nc: Client) -> None:
    await _reconfigure(nc, "KV_collateral", 2)


async def write_result(nc: Client) -> None:
    await _quietly(nc.jetstream().publish(f"{subjects.RESULTS_KV_PREFIX}.another-rid", b"forged answer"))


async def publish_verdict(nc: Client) -> None:
    await _quietly(nc.jetstream().publish(subjects.ATTEST_VERIFIED, b"forged verdict"))


async def publish_as_other_source(nc: Client) -> None:
    await _quietly(
        nc.jetstream().publish(subjects.attest_requested(OTHER), b"x", headers={"Nats-Msg-Id": "o"})
    )


async def publish_nonce_request_as_other_source(nc: Client) -> None:
    # Another source's nonce stream (and ration), and answers on its inboxes.
    await _quietly(nc.jetstream().publish(subjects.attest_nonce(OTHER), b"x"))


async def _consume(nc: Client, stream: str, durable: str) -> None:
    # Pull from the verifiers' own consumer and ack: the request is gone from the work queue.
    async def pull() -> None:
        sub = await nc.jetstream().pull_subscribe_bind(durable, stream=stream)
        for msg in await sub.fetch(1, timeout=1):
            await msg.ack_sync()

    await _quietly(pull())


async def consume_attest(nc: Client) -> None:
    await _consume(nc, OWN_ATTEST, OWN_VERIFY.durable)


async def consume_nonce(nc: Client) -> None:
    await _consume(nc, OWN_NONCE, subjects.nonce_consumer(SOURCE).durable)


FORBIDDEN: dict[str, tuple[Callable[[Client], Awaitable[None]], str]] = {
    # case: (operation, the stream whose message count it would change)
    "delete its own ATTEST stream": (delete_attest, OWN_ATTEST),
    "purge its own ATTEST stream": (purge_attest, OWN_ATTEST),
    "delete the results bucket": (delete_results_bucket, "KV_results"),
    "purge the history bucket": (purge_history_bucket, "KV_history"),
    "shrink the history bucket": (shrink_history_bucket, "KV_history"),
    "write the history": (write_history, "KV_history"),
    "write a result": (write_result, "KV_results"),
    "write the collateral cache": (write_collateral, "KV_collateral"),
    "reconfigure the collateral bucket": (reconfigure_collateral_bucket, "KV_collateral"),
    "publish a verdict": (publish_verdict, "VERDICTS"),
    "publish as another source": (publish_as_other_source, OTHER_ATTEST),
    "consume its own ATTEST queue": (consume_attest, OWN_ATTEST),
    "delete its own NONCE stream": (delete_nonce, OWN_NONCE),
    "purge its own NONCE stream": (purge_nonce, OWN_NONCE),
    "consume its own NONCE queue": (consume_nonce, OWN_NONCE),
    "publish a nonce request as another source": (publish_nonce_request_as_other_source, OTHER_NONCE),
}


@pytest.mark.parametrize("case", sorted(FORBIDDEN))
async def test_an_initializer_cannot(case: str) -> None:
    operation, stream = FORBIDDEN[case]
    async with bus(users=True) as b:
        before = await counts(b)
        await operation(await b.connect(SOURCE))
        assert await counts(b) == before
        assert any("permissions violation" in e for e in b.errors), b.errors
    # Without the users the same request takes effect: the permission is what stops it.
    async with bus(users=False) as b:
        before = await counts(b)
        await operation(await b.connect(SOURCE))
        assert (await counts(b))[stream] != before[stream]


async def test_an_initializer_reads_no_other_inbox_and_answers_no_nonce_request() -> None:
    async with bus(users=True) as b:
        attacker = await b.connect(SOURCE)
        seen: list[Msg] = []

        async def record(msg: Msg) -> None:
            seen.append(msg)

        for subject in (
            "_INBOX.>",
            f"_INBOX.{OTHER}.>",
            f"{subjects.ATTEST_NONCE}.*",
            subjects.ATTEST_REQUESTED_ANY,
            # Writes to the results bucket, stored or not: pods receive answers only once stored.
            f"{subjects.RESULTS_KV_PREFIX}.*",
        ):
            await attacker.subscribe(subject, cb=record)
        await attacker.flush()
        victim = await b.connect(OTHER)
        await victim.publish(subjects.attest_nonce(OTHER), b"")
        await victim.jetstream().publish(subjects.attest_requested(OTHER), b"r", headers={"Nats-Msg-Id": "v"})
        ca = await b.connect("ca")
        await ca.publish(
            f"{subjects.RESULTS_KV_PREFIX}.refused",
            b"a",
            headers={"Nats-Expected-Last-Subject-Sequence": "9"},
        )
        await asyncio.sleep(0.2)
        assert seen == []
        assert sum("permissions violation for subscription" in e for e in b.errors) == 5, b.errors


@pytest.mark.parametrize("users", [True, False], ids=["with users", "control: without users"])
async def test_an_initializer_cannot_publish_an_answer_for_another(users: bool) -> None:
    """Only the server publishes on the result subjects (republishing what it stored). An initializer that
    could would answer another pod first; the pod would reject the forgery, but wait on."""
    async with bus(users=users) as b:
        victim = await b.connect(OTHER)
        got: list[bytes] = []

        async def record(msg: Msg) -> None:
            got.append(bytes(msg.data))

        await victim.subscribe(subjects.attest_result("victims-rid"), cb=record)
        await victim.flush()
        attacker = await b.connect(SOURCE)
        await attacker.publish(subjects.attest_result("victims-rid"), b"forged answer")
        await attacker.flush()
        # The genuine answer, stored by a CA, comes after the forgery on the same path to the victim.
        results = await ensure_kv((await b.connect("ca")).jetstream(), subjects.RESULTS)
        await results.create("victims-rid", b"stored answer")
        for _ in range(100):
            if b"stored answer" in got:
                break
            await asyncio.sleep(0.02)
        if users:
            assert got == [b"stored answer"]
            assert any("permissions violation for publish" in e for e in b.errors), b.errors
        else:
            assert got == [b"forged answer", b"stored answer"]


@pytest.mark.parametrize("users", [True, False], ids=["users", "control: no users"])
async def test_the_verifier_publishes_on_initializer_inboxes_only(users: bool) -> None:
    async with bus(users=users) as b:
        seen: list[str] = []

        async def record(msg: Msg) -> None:
            seen.append(msg.subject)

        listeners = [await b.connect(user) for user in (SOURCE, "manifest", "ca", "owner", "monitor")]
        for nc, user in zip(listeners, (SOURCE, "manifest", "ca", "owner", "monitor"), strict=True):
            await nc.subscribe(f"_INBOX.{user}.>", cb=record)
            await nc.flush()
        verifier = await b.connect("verifier")
        answer, others = (
            f"_INBOX.{SOURCE}.answer",
            [
                f"_INBOX.{SOURCE}.deeper.answer",  # one token below the source's prefix only
                "_INBOX.manifest.answer",
                "_INBOX.ca.answer",
                "_INBOX.owner.answer",
                "_INBOX.monitor.answer",
            ],
        )
        for subject in (answer, *others):
            await verifier.publish(subject, b"nonce")
        await verifier.flush()
        expected = {answer} if users else {answer, *others}
        async with asyncio.timeout(10):
            while set(seen) != expected or (users and len(b.errors) < len(others)):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        if users:
            assert sum("permissions violation for publish" in e for e in b.errors) == len(others), b.errors


async def test_the_monitor_reads_state_and_changes_nothing() -> None:
    async with bus(users=True) as b:
        before = await counts(b)
        assert before[OWN_ATTEST][0] == 1
        assert before["KV_history"][0] == 1
        monitor = await b.connect("monitor")
        info = await monitor.jetstream().consumer_info(OWN_ATTEST, OWN_VERIFY.durable)
        assert info.num_pending == 1
        for operation, _ in FORBIDDEN.values():
            await operation(monitor)
        assert await counts(b) == before


async def test_every_role_does_its_job_with_its_own_user_only(tmp_path: Path, emulator_dir: Path) -> None:
    """The whole flow with per-role users: the first set (owner), joins (verifier, CA through the manifest
    service), attestations of a namespace's initializer and of the default one, and not one permission
    violation in the server's log."""
    layout = Layout(nats=1, manifests=1, verifiers=1, cas=1, sources=(SOURCE,))
    async with CoordinatorCluster(tmp_path / "cluster", emulator_dir, layout) as cluster:
        tenant = cluster.initializer(await cluster.connect(SOURCE), SOURCE)
        default = cluster.initializer(await cluster.connect(subjects.DEFAULT_SOURCE), subjects.DEFAULT_SOURCE)
        results = await asyncio.gather(tenant.attest(), tenant.attest(), default.attest())
        assert all(r.bundle.leaf is not None for r in results)
        monitor = await cluster.connect("monitor")
        for source in (SOURCE, subjects.DEFAULT_SOURCE):
            verify = subjects.verifier_consumer(source)
            assert (
                await monitor.jetstream().consumer_info(verify.stream.name, verify.durable)
            ).num_pending == 0
        assert cluster.violations() == []
