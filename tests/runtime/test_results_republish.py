"""Answers reach pods only once stored, on a real nats-server (one server, and a three-node cluster at R3).

The server republishes an entry of KV ``results`` on the result subject
(:func:`contrast.subjects.attest_result`) after storing it, and only then. So of two writers racing
``create`` on one request id (two CA replicas), the pod receives exactly the winner's value; a write the
stream refuses (wrong expected revision, too large) is never delivered. Each case keeps its control: watched
on the bucket's own subject, where the initializer listened before, the same writes carry the losers and the
refused ones too, which is how one request could get two different bundles. A bucket created by an older
version, without the republish, is updated in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import APIError

from contrast import subjects
from contrast.kv import KvConflict
from contrast.runtime.jetstream import ensure_kv
from contrast.runtime.kv import NatsKeyValue
from contrast.runtime.natsserver import NatsServer, nats_cluster
from tests.services.evil_bus import eventually

RACES = 12


@dataclass
class Watch:
    """Every message on ``subject`` (a wildcard), by its last token (the request id)."""

    seen: dict[str, list[bytes]] = field(default_factory=dict)

    async def start(self, nc: Client, subject: str) -> None:
        async def record(msg: Msg) -> None:
            self.seen.setdefault(msg.subject.rsplit(".", 1)[-1], []).append(bytes(msg.data))

        await nc.subscribe(subject, cb=record)
        await nc.flush()


async def interest_everywhere(watcher: Client, senders: list[Client]) -> None:
    """Until every sender's node knows the watcher's subscriptions: in a cluster, a subscription reaches the
    other nodes over the routes some time after the flush. Subscriptions travel in order, so a probe
    subscribed last and seen from every sender means the earlier ones are known there too."""
    probe, seen = f"probe.{uuid.uuid4().hex}", set()

    async def record(msg: Msg) -> None:
        seen.add(msg.data)

    await watcher.subscribe(probe, cb=record)
    await watcher.flush()
    for i, sender in enumerate(senders):
        for _ in range(100):
            await sender.publish(probe, str(i).encode())
            await sender.flush()
            with contextlib.suppress(TimeoutError):
                await eventually(lambda: str(i).encode() in seen, timeout=0.1)  # noqa: B023
                break
        assert str(i).encode() in seen, "the watcher's interest never reached a sender's node"


@pytest.fixture(params=["one server", "three-node cluster"])
def servers(request: pytest.FixtureRequest, nats_server: NatsServer) -> Iterator[list[NatsServer]]:
    if request.param == "one server":
        yield [nats_server]
        return
    with nats_cluster(3) as cluster:
        yield cluster


@pytest.fixture
async def clients(servers: list[NatsServer]) -> AsyncIterator[list[Client]]:
    """Three connections, each to another node where there are several (writer, writer, watcher)."""
    ncs = [await nats.connect(servers[i % len(servers)].url) for i in range(3)]
    try:
        yield ncs
    finally:
        for nc in ncs:
            await nc.close()


async def results_bucket(nc: Client, replicas: int) -> NatsKeyValue:
    kv = await ensure_kv(nc.jetstream(), subjects.RESULTS, replicas=replicas)
    for _ in range(100):  # in a cluster, the bucket answers writes once its replicas elected a leader
        info = await nc.jetstream().stream_info(f"KV_{subjects.RESULTS.bucket}")
        if info.cluster is None or info.cluster.leader:
            break
        await asyncio.sleep(0.1)
    return NatsKeyValue(kv)


async def watches(nc: Client) -> tuple[Watch, Watch]:
    """(what pods receive: the result subject; control: the bucket's own subject)."""
    delivered, written = Watch(), Watch()
    await delivered.start(nc, subjects.ATTEST_RESULT_ANY)
    await written.start(nc, f"{subjects.RESULTS_KV_PREFIX}.*")
    return delivered, written


async def test_of_two_racing_creates_only_the_stored_one_is_delivered(
    servers: list[NatsServer], clients: list[Client]
) -> None:
    a, b, watcher = clients
    replicas = 3 if len(servers) == 3 else 1
    kv_a, kv_b = await results_bucket(a, replicas), await results_bucket(b, replicas)
    delivered, written = await watches(watcher)
    await interest_everywhere(watcher, [a, b])
    rids = [secrets.token_urlsafe(18) for _ in range(RACES)]

    async def write(kv: NatsKeyValue, rid: str, value: bytes) -> bool:
        try:
            await kv.create(rid, value)
        except KvConflict:
            return False
        return True

    for rid in rids:
        won = await asyncio.gather(
            write(kv_a, rid, b"A " + rid.encode()), write(kv_b, rid, b"B " + rid.encode())
        )
        assert sorted(won) == [False, True]  # create: exactly one writer stores its answer
    # Both writers' messages have passed the server (stored or refused); wait for what they caused.
    await eventually(lambda: all(len(written.seen.get(r, [])) == 2 for r in rids), timeout=10)
    await eventually(lambda: all(r in delivered.seen for r in rids), timeout=10)
    sentinel = secrets.token_urlsafe(18)
    await kv_a.create(sentinel, b"last")
    await eventually(lambda: sentinel in delivered.seen, timeout=10)
    for rid in rids:
        stored = await kv_a.get(rid)
        assert stored is not None
        assert delivered.seen[rid] == [stored.value]  # exactly one answer, and it is the stored one
        assert len(set(written.seen[rid])) == 2  # control: the loser's answer was on the wire as well


async def test_a_write_the_stream_refuses_never_reaches_the_result_subject(nc: Client) -> None:
    kv = NatsKeyValue(await ensure_kv(nc.jetstream(), subjects.RESULTS))
    delivered, written = await watches(nc)
    rid = secrets.token_urlsafe(18)
    subject = f"{subjects.RESULTS_KV_PREFIX}.{rid}"
    refused = [
        # A compare-and-set against a revision that is not the current one (a lost race, a stale writer).
        (b"forged: wrong revision", {"Nats-Expected-Last-Subject-Sequence": "7"}),
        # Larger than the bucket's max_value_size.
        (b"x" * (subjects.RESULTS.max_value_size + 1), {}),
    ]
    for data, headers in refused:
        with pytest.raises(APIError):
            await nc.jetstream().publish(subject, data, headers=headers)
    await kv.create(rid, b"the answer")
    await eventually(lambda: rid in delivered.seen and len(written.seen.get(rid, [])) == 3, timeout=10)
    await nc.flush()
    assert delivered.seen[rid] == [b"the answer"]
    assert written.seen[rid][:2] == [d for d, _ in refused]  # control: on the bucket's subject, they arrive


async def test_a_bucket_without_the_republish_is_updated_in_place(nc: Client) -> None:
    """A bucket an older version created (no republish, other bounds) is brought to the spec, entries kept."""
    js = nc.jetstream()
    spec = replace(subjects.RESULTS, bucket=f"r{uuid.uuid4().hex[:12]}")
    old = await js.create_key_value(
        KeyValueConfig(bucket=spec.bucket, history=1, max_bytes=1 << 20, storage=StorageType.FILE)
    )
    await old.put("earlier", b"an answer stored before the upgrade")
    assert (await js.stream_info(f"KV_{spec.bucket}")).config.republish is None
    for _ in range(2):  # the second start finds the bucket as the first one left it
        kv = NatsKeyValue(await ensure_kv(js, spec))
    config = (await js.stream_info(f"KV_{spec.bucket}")).config
    assert config.republish is not None
    assert (config.republish.src, config.republish.dest) == (
        f"$KV.{spec.bucket}.>",
        f"{subjects.ATTEST_RESULT}.>",
    )
    assert (config.max_bytes, config.max_msg_size, config.max_msgs_per_subject) == (
        spec.max_bytes,
        spec.max_value_size,
        spec.history,
    )
    assert config.max_age == pytest.approx(spec.ttl)
    earlier = await kv.get("earlier")
    assert earlier is not None
    assert earlier.value == b"an answer stored before the upgrade"
    delivered = Watch()
    await delivered.start(nc, subjects.ATTEST_RESULT_ANY)
    rid = secrets.token_urlsafe(18)
    await kv.create(rid, b"after the upgrade")
    await eventually(lambda: rid in delivered.seen, timeout=10)
    assert delivered.seen[rid] == [b"after the upgrade"]
    await js.delete_stream(f"KV_{spec.bucket}")
