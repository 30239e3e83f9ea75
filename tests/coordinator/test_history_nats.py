"""The history over a real nats-server JetStream KV bucket: CAS, verified reads, tampering named."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue as NatsKv

from contrast.coordinator.history import LATEST_KEY, History, ReplicaState, manifest_key, transition_key
from contrast.coordinator.manifest_format import parse_manifest
from contrast.crypto.kdf import SeedEngine
from contrast.errors import StateError, StoreError
from contrast.kv import KvConflict
from contrast.runtime.kv import NatsKeyValue
from tests.coordinator.coord_fixtures import POLICIES, encode, manifest_obj

ENGINE = SeedEngine(b"\x05" * 64, b"\x06" * 32)


@pytest.fixture
async def bucket(nc: Client) -> AsyncIterator[tuple[NatsKv, NatsKeyValue]]:
    js = nc.jetstream()
    name = f"history-{uuid.uuid4().hex[:12]}"
    raw = await js.create_key_value(bucket=name, history=64)
    try:
        yield raw, await NatsKeyValue.open(js, name)
    finally:
        await js.delete_key_value(name)


def _h(kv: NatsKeyValue) -> History:
    key = ENGINE.history_signing_key()
    return History(kv, key.public_key(), key)


async def test_adapter_contract(bucket: tuple[NatsKv, NatsKeyValue]) -> None:
    raw, kv = bucket
    assert await kv.get("manifests/x") is None
    assert await kv.history("latest") == []
    assert await kv.keys() == []
    r1 = await kv.create("latest", b"1")
    with pytest.raises(KvConflict):
        await kv.create("latest", b"2")
    with pytest.raises(KvConflict):
        await kv.update("latest", b"2", last=r1 + 100)
    r2 = await kv.update("latest", b"2", last=r1)
    got = await kv.get("latest")
    assert got is not None
    assert (got.value, got.revision) == (b"2", r2)
    await raw.put("other", b"x")  # interleaved writes of other keys
    await raw.delete("latest")
    assert await kv.get("latest") is None
    hist = await kv.history("latest")
    assert [e.deleted for e in hist] == [False, False, True]
    assert await kv.entry_after("latest", 0) == hist[0]
    assert await kv.entry_after("latest", r1) == hist[1]
    assert await kv.entry_after("latest", r2) == hist[2]
    assert await kv.entry_after("latest", hist[2].revision) is None
    assert await kv.entry_at("latest", r1) == hist[0]
    assert await kv.entry_at("latest", hist[2].revision + 0) == hist[2]
    other = await kv.get("other")
    assert other is not None
    assert await kv.entry_at("latest", other.revision) is None  # that revision belongs to another key
    assert await kv.entry_at("latest", 10_000) is None


async def test_full_cycle_and_tampering_over_nats(bucket: tuple[NatsKv, NatsKeyValue]) -> None:
    raw, kv = bucket
    h = _h(kv)
    docs = [parse_manifest(encode(manifest_obj(secret=s))) for s in ("a", "b", "c")]
    heads = []
    head = None
    for d in docs:
        head = await h.commit(d, POLICIES, head)
        heads.append(head)
    with pytest.raises(StateError):
        await h.commit(docs[0], POLICIES, heads[0])
    latest = await h.read_latest()
    assert latest is not None
    assert latest.generation == 3
    assert [e.manifest.raw for e in await h.read_chain(latest)] == [d.raw for d in docs]
    assert (await h.replica_state(heads[2]))[0] is ReplicaState.READY
    assert (await h.replica_state(heads[1]))[0] is ReplicaState.STALE

    # Rolled-back latest: an old, validly signed pointer written back by the NATS operator.
    rev = await raw.put(LATEST_KEY, heads[1].raw_pointer)
    with pytest.raises(StoreError) as e:
        await h.read_latest()
    assert e.value.code == "store.rollback"
    # Restore the real pointer (as a new revision): a replay of the current pointer is a rollback too.
    await raw.put(LATEST_KEY, heads[2].raw_pointer)
    with pytest.raises(StoreError) as e:
        await h.read_latest()
    assert e.value.code == "store.rollback"
    assert rev > heads[2].revision

    # Edited manifest bytes and a deleted transition.
    await raw.put(manifest_key(docs[2].hash), docs[2].raw + b" ")
    with pytest.raises(StoreError) as e:
        await h.read_manifest(docs[2].hash)
    assert e.value.code == "store.manifest_hash_mismatch"
    await raw.delete(transition_key(heads[0].transition_hash))
    with pytest.raises(StoreError) as e:
        await h.read_transition(heads[0].transition_hash)
    assert e.value.code == "store.missing_transition"
