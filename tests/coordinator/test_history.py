"""Signed, content-addressed history: writes, verified reads, every tamper case named, the state machine."""

from __future__ import annotations

import hashlib
import json

import pytest

from contrast.coordinator.authorize import authorize_set
from contrast.coordinator.history import (
    LATEST_KEY,
    History,
    Latest,
    LatestPointer,
    ReplicaState,
    Transition,
    manifest_key,
    policy_key,
    transition_key,
    verify_exported_chain,
)
from contrast.coordinator.manifest_format import ManifestDocument, parse_manifest
from contrast.crypto.kdf import SeedEngine
from contrast.crypto.ownerkeys import generate_workload_owner_key, public_key_hex, sign_transition
from contrast.errors import AuthError, RequestError, StateError, StoreError
from contrast.kv import KvConflict
from contrast.testing.kv import MemoryKeyValue
from tests.coordinator.coord_fixtures import POLICIES, encode, manifest_obj, owner_key

ENGINE = SeedEngine(b"\x01" * 64, b"\x02" * 32)


def _history(kv: MemoryKeyValue, engine: SeedEngine = ENGINE, *, write: bool = True) -> History:
    key = engine.history_signing_key()
    return History(kv, key.public_key(), key if write else None)


def _doc(secret: str = "db") -> ManifestDocument:
    return parse_manifest(encode(manifest_obj(secret=secret)))


async def _three(kv: MemoryKeyValue) -> list[Latest]:
    h = _history(kv)
    heads: list[Latest] = []
    head: Latest | None = None
    for s in ("a", "b", "c"):
        head = await h.commit(_doc(s), POLICIES, head)
        heads.append(head)
    return heads


async def test_commit_and_read_back() -> None:
    kv = MemoryKeyValue()
    h = _history(kv)
    assert await h.read_latest() is None
    first = await h.commit(_doc("a"), POLICIES, None)
    assert first.generation == 1
    second = await h.commit(_doc("b"), POLICIES, first)
    assert second.generation == 2
    assert second.transition.previous == first.transition_hash
    reader = _history(kv, write=False)
    got = await reader.read_latest()
    assert got is not None
    assert got.transition_hash == second.transition_hash
    assert got.revision == second.revision
    chain = await reader.read_chain(got)
    assert [e.manifest.raw for e in chain] == [_doc("a").raw, _doc("b").raw]
    assert [e.generation for e in chain] == [1, 2]
    assert await reader.read_policy(hashlib.sha256(POLICIES[next(iter(POLICIES))]).digest())
    # The stored layout is exactly the documented one.
    t = Transition(_doc("b").hash, first.transition_hash)
    assert (await kv.get(transition_key(t.hash))) is not None
    assert (await kv.get(manifest_key(_doc("b").hash))) is not None


async def test_reader_without_key_cannot_write() -> None:
    with pytest.raises(StateError) as e:
        await _history(MemoryKeyValue(), write=False).commit(_doc(), POLICIES, None)
    assert e.value.code == "state.no_history_key"


async def test_compare_and_set_loses_to_a_concurrent_writer() -> None:
    kv = MemoryKeyValue()
    h = _history(kv)
    first = await h.commit(_doc("a"), POLICIES, None)
    await h.commit(_doc("b"), POLICIES, first)
    with pytest.raises(StateError) as e:
        await h.commit(_doc("c"), POLICIES, first)
    assert e.value.code == "state.stale"
    with pytest.raises(StateError):
        await h.commit(_doc("c"), POLICIES, None)  # a second "first set"


async def test_edited_manifest_is_named() -> None:
    kv = MemoryKeyValue()
    await _three(kv)
    await kv.put(manifest_key(_doc("c").hash), _doc("c").raw.replace(b'"c"', b'"x"'))
    with pytest.raises(StoreError) as e:
        await _history(kv).read_latest()
    assert e.value.code == "store.manifest_hash_mismatch"


async def test_edited_old_manifest_is_named_on_chain_read() -> None:
    kv = MemoryKeyValue()
    heads = await _three(kv)
    await kv.put(manifest_key(_doc("a").hash), b"{}")
    h = _history(kv)
    latest = await h.read_latest()
    assert latest is not None
    with pytest.raises(StoreError) as e:
        await h.read_chain(latest)
    assert e.value.code == "store.manifest_hash_mismatch"
    assert heads


async def test_edited_policy_is_named() -> None:
    kv = MemoryKeyValue()
    await _three(kv)
    ph = bytes.fromhex(next(iter(POLICIES)))
    await kv.put(policy_key(ph), b"package evil")
    with pytest.raises(StoreError) as e:
        await _history(kv).read_policy(ph)
    assert e.value.code == "store.policy_hash_mismatch"


async def test_swapped_latest_is_named() -> None:
    kv = MemoryKeyValue()
    await _three(kv)
    # A pointer signed by another seed's history key (or garbage) in place of the real one.
    other = SeedEngine(b"\x09" * 64, b"\x02" * 32).history_signing_key()
    cur = await kv.get(LATEST_KEY)
    assert cur is not None
    real = LatestPointer.verify(cur.value, ENGINE.history_signing_key().public_key())
    forged = LatestPointer.sign(other, real.transition_hash, real.generation, real.predecessor_revision)
    await kv.put(LATEST_KEY, forged.encode())
    with pytest.raises(StoreError) as e:
        await _history(kv).read_latest()
    assert e.value.code == "store.bad_latest_signature"
    await kv.put(LATEST_KEY, b"garbage")
    with pytest.raises(StoreError) as e:
        await _history(kv).read_latest()
    assert e.value.code == "store.malformed_latest"


async def test_flipped_signature_bit() -> None:
    kv = MemoryKeyValue()
    await _three(kv)
    cur = await kv.get(LATEST_KEY)
    assert cur is not None
    bad = bytearray(cur.value)
    bad[10] ^= 1  # inside the transition hash
    await kv.put(LATEST_KEY, bytes(bad))
    with pytest.raises(StoreError) as e:
        await _history(kv).read_latest()
    assert e.value.code == "store.bad_latest_signature"


@pytest.mark.parametrize("back_to", [0, 1])
async def test_rolled_back_latest_is_named_even_after_restart(back_to: int) -> None:
    kv = MemoryKeyValue()
    heads = await _three(kv)
    old = heads[back_to]
    await kv.put(LATEST_KEY, old.raw_pointer)
    fresh = _history(kv, write=False)  # a replica that remembers nothing
    with pytest.raises(StoreError) as e:
        await fresh.read_latest()
    assert e.value.code == "store.rollback"


async def test_rollback_after_delete_is_named() -> None:
    kv = MemoryKeyValue()
    heads = await _three(kv)
    await kv.delete(LATEST_KEY)
    with pytest.raises(StoreError) as e:
        await _history(kv).read_latest()
    assert e.value.code == "store.latest_deleted"
    await kv.put(LATEST_KEY, heads[1].raw_pointer)
    with pytest.raises(StoreError) as e:
        await _history(kv).read_latest()
    assert e.value.code == "store.rollback"


async def test_purged_latest_with_transitions_left_is_named() -> None:
    kv = MemoryKeyValue()
    await _three(kv)
    await kv.purge(LATEST_KEY)
    with pytest.raises(StoreError) as e:
        await _history(kv).read_latest()
    assert e.value.code == "store.latest_missing"


async def test_deleted_transition_is_named() -> None:
    kv = MemoryKeyValue()
    heads = await _three(kv)
    await kv.delete(transition_key(heads[1].transition_hash))
    h = _history(kv)
    latest = await h.read_latest()
    assert latest is not None
    with pytest.raises(StoreError) as e:
        await h.read_chain(latest)
    assert e.value.code == "store.missing_transition"
    await kv.delete(transition_key(heads[2].transition_hash))
    with pytest.raises(StoreError) as e:
        await h.read_latest()
    assert e.value.code == "store.missing_transition"


async def test_malformed_stored_manifest_is_named() -> None:
    kv = MemoryKeyValue()
    h = _history(kv)
    bad = b'{"not": "a manifest"}'
    # Content-addressed and correctly hashed, but not a manifest: still refused on read.
    doc = ManifestDocument(raw=bad, manifest=_doc().manifest)
    head = await h.commit(doc, POLICIES, None)
    with pytest.raises(StoreError) as e:
        await h.read_chain(head)
    assert e.value.code == "store.invalid_stored_manifest"


async def test_state_machine() -> None:
    kv = MemoryKeyValue()
    h = _history(kv)
    assert await h.replica_state(None) == (ReplicaState.UNINITIALIZED, None)
    a = await h.commit(_doc("a"), POLICIES, None)
    state, stored = await h.replica_state(a)
    assert state is ReplicaState.READY
    assert stored is not None
    assert stored.transition_hash == a.transition_hash
    assert (await h.replica_state(None))[0] is ReplicaState.STALE  # restarted: holds no keys
    b = await h.commit(_doc("b"), POLICIES, a)  # another replica moved on
    assert (await h.replica_state(a))[0] is ReplicaState.STALE
    assert await h.is_ancestor_or_self(a.transition_hash, b)
    assert await h.is_ancestor_or_self(b.transition_hash, b)
    assert not await h.is_ancestor_or_self(b"\x00" * 32, b)


async def test_state_machine_detects_rollback_against_memory() -> None:
    kv = MemoryKeyValue()
    h = _history(kv)
    a = await h.commit(_doc("a"), POLICIES, None)
    b = await h.commit(_doc("b"), POLICIES, a)
    # The attacker replays a whole older store state (including the pointer history): only memory can tell.
    kv2 = MemoryKeyValue()
    h2 = _history(kv2)
    await h2.commit(_doc("a"), POLICIES, None)
    with pytest.raises(StoreError) as e:
        await h2.replica_state(b)
    assert e.value.code == "store.rollback"
    kv3 = MemoryKeyValue()
    await kv3.purge(LATEST_KEY)
    with pytest.raises(StoreError) as e:
        await _history(kv3).replica_state(b)
    assert e.value.code == "store.latest_missing"


async def test_memory_kv_contract() -> None:
    kv = MemoryKeyValue()
    r1 = await kv.create("k", b"1")
    with pytest.raises(KvConflict):
        await kv.create("k", b"2")
    with pytest.raises(KvConflict):
        await kv.update("k", b"2", last=r1 + 5)
    r2 = await kv.update("k", b"2", last=r1)
    assert r2 > r1
    assert [e.value for e in await kv.history("k")] == [b"1", b"2"]
    assert await kv.keys() == ["k"]


# ---- authorization ------------------------------------------------------------------------------------


async def test_authorize_first_update_replay_and_immutable() -> None:
    kv = MemoryKeyValue()
    h = _history(kv)
    a_doc = _doc("a")
    authorize_set(current=None, head=None, new=a_doc, signature=None)
    a = await h.commit(a_doc, POLICIES, None)
    b_doc = _doc("b")
    sig = sign_transition(owner_key(), b_doc.hash, a.transition_hash)
    authorize_set(current=a_doc, head=a, new=b_doc, signature=sig, expected_previous=a.transition_hash)
    b = await h.commit(b_doc, POLICIES, a)
    # Replaying the same signed set against the new head fails.
    with pytest.raises(AuthError) as e:
        authorize_set(current=b_doc, head=b, new=b_doc, signature=sig)
    assert e.value.code == "auth.not_authorized"
    # Another key, no signature, stale --atomic.
    c_doc = _doc("c")
    with pytest.raises(AuthError) as e:
        authorize_set(
            current=b_doc,
            head=b,
            new=c_doc,
            signature=sign_transition(generate_workload_owner_key(), c_doc.hash, b.transition_hash),
        )
    assert e.value.code == "auth.not_authorized"
    with pytest.raises(AuthError) as e:
        authorize_set(current=b_doc, head=b, new=c_doc, signature=None)
    assert e.value.code == "auth.signature_required"
    with pytest.raises(StateError) as se:
        authorize_set(
            current=b_doc,
            head=b,
            new=c_doc,
            signature=sign_transition(owner_key(), c_doc.hash, b.transition_hash),
            expected_previous=a.transition_hash,
        )
    assert se.value.code == "state.stale"


def test_authorize_refuses_changed_seedshare_owners_and_immutable() -> None:
    a_doc = _doc("a")
    head_t = Transition(a_doc.hash, bytes(32))

    class _Head:
        transition_hash = head_t.hash
        manifest_hash = a_doc.hash

    obj = manifest_obj(secret="b")
    obj["SeedshareOwnerPubKeys"] = []
    new = parse_manifest(encode(obj))
    sig = sign_transition(owner_key(), new.hash, head_t.hash)
    with pytest.raises(RequestError) as re_:
        authorize_set(current=a_doc, head=_Head(), new=new, signature=sig)  # type: ignore[arg-type]
    assert re_.value.code == "request.seedshare_owners_changed"
    frozen = parse_manifest(encode(manifest_obj(owners=[])))
    frozen_head = Transition(frozen.hash, bytes(32))

    class _Head2:
        transition_hash = frozen_head.hash
        manifest_hash = frozen.hash

    new2 = parse_manifest(encode(manifest_obj(owners=[], secret="z")))
    with pytest.raises(AuthError) as e:
        authorize_set(
            current=frozen,
            head=_Head2(),  # type: ignore[arg-type]
            new=new2,
            signature=sign_transition(owner_key(), new2.hash, frozen_head.hash),
        )
    assert e.value.code == "auth.immutable"
    assert json.loads(frozen.raw)["WorkloadOwnerPubKeys"] == []
    assert public_key_hex(owner_key())


async def test_commit_needs_exactly_the_policies() -> None:
    kv = MemoryKeyValue()
    h = _history(kv)
    one = dict(list(POLICIES.items())[:1])
    with pytest.raises(RequestError) as e:
        await h.commit(_doc(), one, None)
    assert e.value.code == "request.policy_missing"
    assert await kv.keys() == []  # nothing was written


async def _export(kv: MemoryKeyValue) -> tuple[bytes, dict[bytes, bytes], dict[bytes, bytes]]:
    h = _history(kv)
    latest = await h.read_latest()
    assert latest is not None
    chain = await h.read_chain(latest)
    transitions = {e.transition_hash: e.transition.encode() for e in chain}
    manifests = {e.transition.manifest_hash: e.manifest.raw for e in chain}
    return latest.transition_hash, transitions, manifests


async def test_exported_chain_verifies_and_tampering_is_named() -> None:
    kv = MemoryKeyValue()
    heads = await _three(kv)
    head, transitions, manifests = await _export(kv)
    chain = verify_exported_chain(head, transitions, manifests)
    assert [e.generation for e in chain] == [1, 2, 3]
    assert chain[-1].transition_hash == heads[2].transition_hash

    cases: list[tuple[str, bytes, dict[bytes, bytes], dict[bytes, bytes]]] = []
    m0 = heads[0].manifest_hash
    cases.append(("store.manifest_hash_mismatch", head, transitions, {**manifests, m0: manifests[m0] + b" "}))
    cases.append(
        ("store.missing_manifest", head, transitions, {k: v for k, v in manifests.items() if k != m0})
    )
    t1 = heads[1].transition_hash
    cases.append(
        ("store.missing_transition", head, {k: v for k, v in transitions.items() if k != t1}, manifests)
    )
    cases.append(("store.transition_hash_mismatch", head, {**transitions, t1: bytes(64)}, manifests))
    cases.append(("store.unreferenced_transition", heads[1].transition_hash, transitions, manifests))
    for code, hd, ts, ms in cases:
        with pytest.raises(StoreError) as e:
            verify_exported_chain(hd, ts, ms)
        assert e.value.code == code


async def test_memory_kv_revision_lookups() -> None:
    kv = MemoryKeyValue()
    r1 = await kv.put("a", b"1")
    await kv.put("b", b"x")
    r3 = await kv.put("a", b"2")
    assert (await kv.entry_after("a", r1)) == (await kv.get("a"))
    assert (await kv.entry_after("a", r3)) is None
    assert (await kv.entry_at("a", r1)) is not None
    assert (await kv.entry_at("a", r1 + 1)) is None
