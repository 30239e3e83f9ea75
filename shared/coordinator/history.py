"""The Coordinator's signed, content-addressed history, over an untrusted key-value store.

Layout in the ``history`` bucket::

    manifests/<sha256 hex>     the manifest bytes exactly as received
    policies/<sha256 hex>      a policy document
    transitions/<sha256 hex>   manifest hash (32) ‖ previous transition hash (32; zeros for the first)
    latest                     the signed pointer to the newest transition

``latest`` (116 bytes)::

    b"CLP1" ‖ transition hash (32) ‖ generation (u64 BE) ‖ predecessor revision (u64 BE)
            ‖ Ed25519 signature (64)

signed with the seed-derived history key over ``"contrast history latest v1\\0" ‖ the first 52 bytes``.
``generation`` counts transitions (1 for the first manifest). ``predecessor revision`` is the KV revision
of the ``latest`` value this one replaced (0 for the first), which the writer knows from its
compare-and-set. It chains the pointer's own KV history, so writing an *old* signed pointer back (a
rollback) leaves a pointer whose predecessor is not the entry before it, and is detected even by a replica
that just restarted.

Every read re-hashes what it fetched and checks every signature; any mismatch raises :class:`StoreError`
with a reason naming the problem (``store.manifest_hash_mismatch``, ``store.bad_latest_signature``,
``store.rollback``, ``store.missing_transition`` …).

Limits, stated plainly: a store operator who restores a complete, consistent earlier snapshot (every key,
and the pointer's KV history purged through the JetStream API) produces a store that is indistinguishable
from the past one. Only memory catches that: :meth:`History.replica_state` raises ``store.rollback`` for a
replica that holds a newer head, and a relying party that kept the head it verified last (``contrast
verify``) can require it to be an ancestor-or-self of the head it is now served.
Wiping the whole bucket looks like a fresh deployment; a new first set then makes a new root CA, which
every relying party that pinned the old root refuses.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from contrast.coordinator.manifest_format import (
    ManifestDocument,
    ManifestInvalid,
    check_policies_supplied,
    parse_manifest,
)
from contrast.errors import StateError, StoreError
from contrast.kv import KeyValue, KvConflict

LATEST_KEY: Final = "latest"
ZERO_HASH: Final = bytes(32)
_MAGIC: Final = b"CLP1"
_LATEST_LABEL: Final = b"contrast history latest v1\x00"
_POINTER = struct.Struct(">4s32sQQ")
LATEST_SIZE: Final = _POINTER.size + 64
# A longer chain than this is refused rather than walked: it bounds the work a tampered store can cause.
MAX_GENERATIONS: Final = 100_000


def manifest_key(h: bytes) -> str:
    return f"manifests/{h.hex()}"


def policy_key(h: bytes) -> str:
    return f"policies/{h.hex()}"


def transition_key(h: bytes) -> str:
    return f"transitions/{h.hex()}"


@dataclass(frozen=True, slots=True)
class Transition:
    manifest_hash: bytes
    previous: bytes  # ZERO_HASH for the first transition

    def encode(self) -> bytes:
        return self.manifest_hash + self.previous

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes) -> Transition:
        if len(data) != 64:
            raise StoreError("malformed_transition", "a transition record is 64 bytes")
        return cls(manifest_hash=data[:32], previous=data[32:])


@dataclass(frozen=True, slots=True)
class LatestPointer:
    transition_hash: bytes
    generation: int
    predecessor_revision: int
    signature: bytes

    def signed_part(self) -> bytes:
        return _POINTER.pack(_MAGIC, self.transition_hash, self.generation, self.predecessor_revision)

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def sign(
        cls,
        key: ed25519.Ed25519PrivateKey,
        transition_hash: bytes,
        generation: int,
        predecessor_revision: int,
    ) -> LatestPointer:
        unsigned = cls(transition_hash, generation, predecessor_revision, b"")
        return cls(
            transition_hash,
            generation,
            predecessor_revision,
            key.sign(_LATEST_LABEL + unsigned.signed_part()),
        )

    @classmethod
    def decode(cls, data: bytes) -> LatestPointer:
        """Decode *without* checking the signature (``store.malformed_latest``): for a reader that holds no
        history key yet (a stale replica), whose answer is authenticated by someone who does."""
        if len(data) != LATEST_SIZE:
            raise StoreError("malformed_latest", "the latest pointer has the wrong size")
        magic, th, gen, prev = _POINTER.unpack(data[: _POINTER.size])
        if magic != _MAGIC or gen < 1:
            raise StoreError("malformed_latest", "the latest pointer has a bad header")
        return cls(th, gen, prev, data[_POINTER.size :])

    @classmethod
    def verify(cls, data: bytes, key: ed25519.Ed25519PublicKey) -> LatestPointer:
        """Decode and check the signature (``store.malformed_latest``, ``store.bad_latest_signature``)."""
        ptr = cls.decode(data)
        try:
            key.verify(ptr.signature, _LATEST_LABEL + ptr.signed_part())
        except InvalidSignature:
            raise StoreError(
                "bad_latest_signature", "the latest pointer is not signed by the history key"
            ) from None
        return ptr


@dataclass(frozen=True, slots=True)
class Latest:
    """The verified head of the history: what a replica serves and remembers."""

    pointer: LatestPointer
    revision: int  # KV revision of the ``latest`` entry (for compare-and-set)
    transition: Transition
    raw_pointer: bytes  # the signed bytes, as served to clients

    @property
    def transition_hash(self) -> bytes:
        return self.pointer.transition_hash

    @property
    def generation(self) -> int:
        return self.pointer.generation

    @property
    def manifest_hash(self) -> bytes:
        return self.transition.manifest_hash


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One verified step of the chain (oldest first in :meth:`History.read_chain`)."""

    generation: int
    transition_hash: bytes
    transition: Transition
    manifest: ManifestDocument


def verify_exported_chain(
    head: bytes, transitions: dict[bytes, bytes], manifests: dict[bytes, bytes]
) -> list[HistoryEntry]:
    """Check a history as served by ``get`` (for ``contrast verify``), without the store or the history key.

    ``head`` is the transition hash that the Coordinator's attested reply binds; ``transitions`` and
    ``manifests`` map hashes to the bytes received. Every record is re-hashed and every link followed back
    to the first transition; a record that is missing, mis-hashed, unused or not a manifest raises
    ``store.*``. Returns the entries oldest first.
    """
    out: list[HistoryEntry] = []
    h, used = head, set()
    while True:
        if len(out) >= MAX_GENERATIONS:
            raise StoreError("history_too_long", "the history is longer than this client will walk")
        data = transitions.get(h)
        if data is None:
            raise StoreError("missing_transition", f"transition {h.hex()[:16]}… is missing")
        if hashlib.sha256(data).digest() != h:
            raise StoreError(
                "transition_hash_mismatch", f"transition {h.hex()[:16]}… does not hash to its name"
            )
        t = Transition.decode(data)
        raw = manifests.get(t.manifest_hash)
        if raw is None:
            raise StoreError("missing_manifest", f"manifest {t.manifest_hash.hex()[:16]}… is missing")
        if hashlib.sha256(raw).digest() != t.manifest_hash:
            raise StoreError(
                "manifest_hash_mismatch", f"manifest {t.manifest_hash.hex()[:16]}… is mis-hashed"
            )
        try:
            doc = parse_manifest(raw)
        except ManifestInvalid as e:
            raise StoreError("invalid_stored_manifest", e.message) from e
        used.add(h)
        out.append(HistoryEntry(0, h, t, doc))
        if t.previous == ZERO_HASH:
            break
        h = t.previous
    if used != set(transitions):
        raise StoreError(
            "unreferenced_transition", "the history contains transitions that are not on the chain"
        )
    out.reverse()
    return [HistoryEntry(i + 1, e.transition_hash, e.transition, e.manifest) for i, e in enumerate(out)]


class ReplicaState(enum.Enum):
    UNINITIALIZED = "uninitialized"
    READY = "ready"
    STALE = "stale"


class History:
    """Verified reads and compare-and-set writes of the history. Writing needs the history signing key."""

    def __init__(
        self,
        kv: KeyValue,
        verify_key: ed25519.Ed25519PublicKey,
        signing_key: ed25519.Ed25519PrivateKey | None = None,
    ) -> None:
        if signing_key is not None and signing_key.public_key() != verify_key:
            raise ValueError("signing key does not match the verify key")
        self._kv = kv
        self._verify_key = verify_key
        self._signing_key = signing_key

    # ---- content-addressed reads ------------------------------------------------------------------------

    async def _content(self, key: str, h: bytes, what: str) -> bytes:
        entry = await self._kv.get(key)
        if entry is None:
            raise StoreError(f"missing_{what}", f"{key} is missing from the store")
        if hashlib.sha256(entry.value).digest() != h:
            raise StoreError(f"{what}_hash_mismatch", f"{key}: stored bytes do not hash to their key")
        return entry.value

    async def read_transition(self, h: bytes) -> Transition:
        return Transition.decode(await self._content(transition_key(h), h, "transition"))

    async def read_manifest(self, h: bytes) -> ManifestDocument:
        raw = await self._content(manifest_key(h), h, "manifest")
        try:
            return parse_manifest(raw)
        except ManifestInvalid as e:
            raise StoreError("invalid_stored_manifest", f"{manifest_key(h)}: {e.message}") from e

    async def read_policy(self, h: bytes) -> bytes:
        return await self._content(policy_key(h), h, "policy")

    # ---- the signed head --------------------------------------------------------------------------------

    async def read_latest(self) -> Latest | None:
        """The verified head, or None for a store that was never initialized.

        Checks: the pointer's signature; that its predecessor revision is the ``latest`` entry right before
        it (else ``store.rollback``); the transition it names (re-hashed) and that the manifest it names
        exists and hashes right.
        """
        entry = await self._kv.get(LATEST_KEY)
        if entry is None:
            if await self._kv.history(LATEST_KEY):
                raise StoreError("latest_deleted", "the latest pointer was deleted")
            if any(k.startswith("transitions/") for k in await self._kv.keys()):
                raise StoreError("latest_missing", "transitions exist but the latest pointer is missing")
            return None
        ptr = LatestPointer.verify(entry.value, self._verify_key)
        await self._check_pointer_chain(ptr, entry.revision)
        transition = await self.read_transition(ptr.transition_hash)
        await self._content(manifest_key(transition.manifest_hash), transition.manifest_hash, "manifest")
        return Latest(pointer=ptr, revision=entry.revision, transition=transition, raw_pointer=entry.value)

    async def _check_pointer_chain(self, ptr: LatestPointer, revision: int) -> None:
        # The pointer names the KV revision it replaced. The first version of ``latest`` written after that
        # revision must be this very entry: an old pointer written back (or the current one re-put) lands
        # later, behind the entry that really followed its predecessor.
        after = await self._kv.entry_after(LATEST_KEY, ptr.predecessor_revision)
        if after is None or after.revision != revision:
            raise StoreError("rollback", "the latest pointer does not follow the pointer it replaced")
        if ptr.predecessor_revision == 0:
            if ptr.generation != 1:
                raise StoreError("malformed_latest", "only the first latest pointer may have no predecessor")
            return
        before = await self._kv.entry_at(LATEST_KEY, ptr.predecessor_revision)
        if before is None or before.deleted:
            raise StoreError("latest_history_missing", "the pointer that the latest pointer replaced is gone")
        prev = LatestPointer.verify(before.value, self._verify_key)
        if prev.generation + 1 != ptr.generation:
            raise StoreError("rollback", "the latest pointer's generation does not follow its predecessor")

    async def read_chain(self, latest: Latest) -> list[HistoryEntry]:
        """Every transition from the first to ``latest``, each re-hashed, with its manifest; oldest first."""
        if latest.generation > MAX_GENERATIONS:
            raise StoreError("history_too_long", "the history is longer than this replica will walk")
        out: list[HistoryEntry] = []
        h = latest.transition_hash
        for gen in range(latest.generation, 0, -1):
            t = await self.read_transition(h)
            out.append(HistoryEntry(gen, h, t, await self.read_manifest(t.manifest_hash)))
            h = t.previous
            if (h == ZERO_HASH) != (gen == 1):
                raise StoreError(
                    "generation_mismatch", "the transition chain length does not match the generation"
                )
        out.reverse()
        return out

    async def is_ancestor_or_self(self, ancestor: bytes, descendant: Latest) -> bool:
        """True if transition ``ancestor`` is ``descendant`` or lies on its chain."""
        h = descendant.transition_hash
        for _ in range(min(descendant.generation, MAX_GENERATIONS)):
            if h == ancestor:
                return True
            h = (await self.read_transition(h)).previous
        return False

    # ---- writes -----------------------------------------------------------------------------------------

    async def commit(
        self, manifest: ManifestDocument, policies: dict[str, bytes], expected: Latest | None
    ) -> Latest:
        """Store the manifest, its policies and a transition, then move ``latest`` by compare-and-set.

        ``expected`` is the head the caller authorized against (None for the first set). If another writer
        moved ``latest`` first, raises ``state.stale`` and nothing points at the new content.
        The policy documents must be exactly those the manifest names (``request.policy_*`` otherwise).
        """
        if self._signing_key is None:
            raise StateError("no_history_key", "this replica does not hold the history signing key")
        # Never let a manifest into the history without exactly its policy documents.
        check_policies_supplied(manifest.manifest, policies)
        for hex_hash, doc in policies.items():
            await self._kv.put(policy_key(bytes.fromhex(hex_hash)), doc)
        await self._kv.put(manifest_key(manifest.hash), manifest.raw)
        transition = Transition(manifest.hash, expected.transition_hash if expected else ZERO_HASH)
        await self._kv.put(transition_key(transition.hash), transition.encode())
        generation = expected.generation + 1 if expected else 1
        prev_rev = expected.revision if expected else 0
        ptr = LatestPointer.sign(self._signing_key, transition.hash, generation, prev_rev)
        raw = ptr.encode()
        try:
            if expected is None:
                rev = await self._kv.create(LATEST_KEY, raw)
            else:
                rev = await self._kv.update(LATEST_KEY, raw, last=expected.revision)
        except KvConflict:
            raise StateError("stale", "the history moved on since this update was prepared") from None
        return Latest(pointer=ptr, revision=rev, transition=transition, raw_pointer=raw)

    # ---- state machine ----------------------------------------------------------------------------------

    async def replica_state(self, mine: Latest | None) -> tuple[ReplicaState, Latest | None]:
        """Where a replica stands, given the head it last wrote or loaded (``mine``).

        - no stored head: uninitialized (but ``store.latest_missing`` if this replica knows one);
        - stored head == mine: ready;
        - stored head is a strict ancestor of mine, or an older generation: ``store.rollback``;
        - otherwise (someone moved on, or this replica holds nothing): stale.
        """
        stored = await self.read_latest()
        if stored is None:
            if mine is not None:
                raise StoreError("latest_missing", "the store lost the latest pointer this replica wrote")
            return ReplicaState.UNINITIALIZED, None
        if mine is None:
            return ReplicaState.STALE, stored
        if stored.transition_hash == mine.transition_hash and stored.generation == mine.generation:
            return ReplicaState.READY, stored
        if stored.generation < mine.generation or await self.is_ancestor_or_self(
            stored.transition_hash, mine
        ):
            raise StoreError("rollback", "the stored history is older than the one this replica holds")
        return ReplicaState.STALE, stored
