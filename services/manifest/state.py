"""One manifest replica's state machine: uninitialized → ready(n) → stale, and the secrets it holds.

=================  ==========================================================================================
state              meaning
=================  ==========================================================================================
``uninitialized``  the history bucket is empty: the next ``set`` is trust on first use and creates the seed
``ready``          this replica holds the seed and its head equals the stored, verified ``latest``
``stale``          the store has a history but this replica does not hold its seed (a restart, a new replica),
                   or another replica moved ``latest`` beyond the head this replica holds
=================  ==========================================================================================

A replica whose measured configuration pins the Coordinator's root CA
(``CONTRAST_COORDINATOR_ROOT_CA_SHA256``, :mod:`contrast.coordinator.pins`) adopts no seed that does not
derive that root: it makes no first set (a new seed is a new root) and takes a recovered or peer-granted seed
only if its root is the pinned one.

The seed, the history-signing key and the mesh CA key live only in this object's memory. Every request that
needs keys calls :meth:`ManifestReplica.ready_view`, which re-reads and re-verifies the stored head first, so
a tampered store (bad signature, rollback, edited bytes, a missing record) is refused by name
(``store.*``) rather than served. A stale replica leaves it by a peer join (:mod:`contrast.manifest.peer`) or
by an owner's ``contrast recover``; it serves nothing that needs keys meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from contrast.coordinator.authorize import authorize_set
from contrast.coordinator.history import (
    LATEST_KEY,
    History,
    HistoryEntry,
    Latest,
    ReplicaState,
    Transition,
    transition_key,
)
from contrast.coordinator.manifest_format import ManifestDocument, check_policies_supplied, parse_manifest
from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.recovery_head import ClaimedHead, claimed_head, pointer_head
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.crypto.kdf import SeedEngine, generate_seed
from contrast.crypto.seedshare import (
    make_seed_shares,
    recovery_signing_message,
    verify_recovery_signature,
)
from contrast.errors import AuthError, RequestError, StateError, StoreError
from contrast.kv import KeyValue
from contrast.pki.mesh import MeshAuthority, new_mesh_authority
from contrast.pki.root import root_certificate
from contrast.replica.join import JoinAuthority, JoinResult

StateListener = Callable[[ReplicaState, int, str], Awaitable[None]]
UpdateListener = Callable[["ReadyView"], Awaitable[None]]

_DER = serialization.Encoding.DER


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class ReadyView:
    """A consistent snapshot of a ready replica: everything one request needs."""

    engine: SeedEngine
    history: History
    mesh: MeshAuthority
    latest: Latest
    manifest: ManifestDocument
    root_ca_der: bytes
    mesh_ca_der: bytes

    def __repr__(self) -> str:
        return f"ReadyView(generation={self.latest.generation})"

    def join_authority(self, identity: CoordinatorIdentity) -> JoinAuthority:
        return JoinAuthority(
            identity=identity,
            engine=self.engine,
            mesh=self.mesh,
            manifest=self.manifest.manifest,
            generation=self.latest.generation,
            transition_hash=self.latest.transition_hash,
        )


@dataclass(frozen=True, slots=True)
class SetOutcome:
    view: ReadyView
    seed_shares: bytes  # seed-shares.json on the first set, else empty


def policy_map(documents: list[bytes]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for doc in documents:
        h = hashlib.sha256(doc).hexdigest()
        if h in out:
            raise RequestError("duplicate_policy", f"policy {h[:16]}… was supplied twice")
        out[h] = doc
    return out


class ManifestReplica:
    """The state and secrets of one manifest replica. All transitions happen under one lock."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        on_state: StateListener | None = None,
        on_update: UpdateListener | None = None,
        clock: Callable[[], dt.datetime] = _now,
        pins: CoordinatorPins | None = None,
    ) -> None:
        self._kv = kv
        self._pins = pins or CoordinatorPins()
        self._lock = asyncio.Lock()
        self._engine: SeedEngine | None = None
        self._history: History | None = None
        self._mesh: MeshAuthority | None = None
        self._latest: Latest | None = None
        self._manifest: ManifestDocument | None = None
        self._state = ReplicaState.UNINITIALIZED
        self._fault: StoreError | None = None
        self._on_state = on_state
        self._on_update = on_update
        self._clock = clock
        self._reported: tuple[ReplicaState, int, str] | None = None

    def __repr__(self) -> str:
        return f"ManifestReplica(state={self._state.value}, generation={self.generation})"

    @property
    def state(self) -> ReplicaState:
        return self._state

    @property
    def fault(self) -> StoreError | None:
        """The store problem that makes this replica refuse to serve, if any (re-evaluated on refresh)."""
        return self._fault

    @property
    def generation(self) -> int:
        return self._latest.generation if self._latest and self._state is ReplicaState.READY else 0

    # ---- reading the store ----------------------------------------------------------------------------

    async def refresh(self) -> ReplicaState:
        """Re-read and re-verify the stored head; update the state. Raises the ``store.*`` error it found."""
        async with self._lock:
            return await self._refresh_locked()

    async def _refresh_locked(self) -> ReplicaState:
        try:
            if self._history is None:
                # Without the seed we cannot check signatures; an empty bucket is all we can tell apart. The
                # pointer is read directly first: a key listing is a consumer that can come back short.
                stored = await self._kv.get(LATEST_KEY) is not None or bool(await self._kv.keys())
                state = ReplicaState.STALE if stored else ReplicaState.UNINITIALIZED
            else:
                state, _ = await self._history.replica_state(self._latest)
                if state is ReplicaState.UNINITIALIZED:  # pragma: no cover - replica_state raises instead
                    raise StoreError("latest_missing", "the store lost its history")
        except StoreError as e:
            self._fault = e
            await self._report()
            raise
        self._fault = None
        self._state = state
        await self._report()
        return state

    async def _report(self) -> None:
        now = (self._state, self.generation, self._fault.code if self._fault else "")
        if self._on_state is not None and now != self._reported:
            self._reported = now
            await self._on_state(*now)

    async def ready_view(self) -> ReadyView:
        """The verified snapshot for a request that needs keys; ``state.*``/``store.*`` if there is none."""
        async with self._lock:
            state = await self._refresh_locked()
            if state is ReplicaState.UNINITIALIZED:
                raise StateError("uninitialized", "no manifest has been set yet")
            if state is ReplicaState.STALE:
                raise StateError(
                    "replica_stale",
                    "this manifest replica does not hold the current state; it recovers from a ready peer, "
                    "or a seed-share owner runs `contrast recover`",
                )
            return self._view()

    def _view(self) -> ReadyView:
        engine, history, mesh, latest, manifest = (
            self._engine,
            self._history,
            self._mesh,
            self._latest,
            self._manifest,
        )
        if engine is None or history is None or mesh is None or latest is None or manifest is None:
            raise RuntimeError("a ready view was asked of a replica that holds no state")
        return ReadyView(
            engine=engine,
            history=history,
            mesh=mesh,
            latest=latest,
            manifest=manifest,
            root_ca_der=root_certificate(engine.root_ca_key()).public_bytes(_DER),
            mesh_ca_der=mesh.mesh_ca.public_bytes(_DER),
        )

    async def chain(self) -> list[HistoryEntry]:
        view = await self.ready_view()
        return await view.history.read_chain(view.latest)

    # ---- set ------------------------------------------------------------------------------------------

    async def set_manifest(
        self,
        raw: bytes,
        policies: list[bytes],
        *,
        signature: bytes,
        expected_previous: bytes,
    ) -> SetOutcome:
        """Authorize and commit a manifest; the first set creates the seed (trust on first use)."""
        doc = parse_manifest(raw)
        documents = policy_map(policies)
        check_policies_supplied(doc.manifest, documents)
        if expected_previous and len(expected_previous) != 32:
            raise RequestError("bad_transition", "the expected previous transition is 32 bytes")
        async with self._lock:
            state = await self._refresh_locked()
            if state is ReplicaState.STALE:
                raise StateError(
                    "replica_stale", "this manifest replica is stale; retry on a ready one or recover"
                )
            if state is ReplicaState.UNINITIALIZED:
                return await self._first_set(doc, documents, signature, expected_previous)
            return await self._update(doc, documents, signature, expected_previous)

    async def _first_set(
        self, doc: ManifestDocument, documents: dict[str, bytes], signature: bytes, expected_previous: bytes
    ) -> SetOutcome:
        authorize_set(
            current=None,
            head=None,
            new=doc,
            signature=signature or None,
            expected_previous=expected_previous or None,
        )
        seed, salt = generate_seed()
        engine = SeedEngine(seed, salt)
        self._check_root(engine)  # a pinned replica never starts another Coordinator
        history = self._history_for(engine)
        # Shares first: if a seed-share owner key were unusable we must fail before the history exists.
        shares = make_seed_shares(seed, salt, doc.manifest.SeedshareOwnerPubKeys)
        latest = await history.commit(doc, documents, None)
        self._install(engine, history, latest, doc)
        view = self._view()
        await self._after_update(view)
        return SetOutcome(view=view, seed_shares=shares.encode())

    async def _update(
        self, doc: ManifestDocument, documents: dict[str, bytes], signature: bytes, expected_previous: bytes
    ) -> SetOutcome:
        current = self._view()
        authorize_set(
            current=current.manifest,
            head=current.latest,
            new=doc,
            signature=signature or None,
            expected_previous=expected_previous or None,
        )
        latest = await current.history.commit(doc, documents, current.latest)
        self._install(current.engine, current.history, latest, doc)
        view = self._view()
        await self._after_update(view)
        return SetOutcome(view=view, seed_shares=b"")

    def _check_root(self, engine: SeedEngine) -> None:
        """``policy.coordinator_root_mismatch`` unless the seed derives the pinned root CA (if any)."""
        self._pins.check_root(root_certificate(engine.root_ca_key()).public_bytes(_DER))

    def _history_for(self, engine: SeedEngine) -> History:
        key = engine.history_signing_key()
        return History(self._kv, key.public_key(), key)

    def _install(
        self,
        engine: SeedEngine,
        history: History,
        latest: Latest,
        doc: ManifestDocument,
        mesh: MeshAuthority | None = None,
    ) -> None:
        """Adopt a verified head. Without ``mesh``, a new mesh CA is made: it rotates with every manifest."""
        root_key = engine.root_ca_key()
        self._mesh = mesh or new_mesh_authority(root_key, root_certificate(root_key), now=self._clock())
        self._engine, self._history, self._latest, self._manifest = engine, history, latest, doc
        self._state, self._fault = ReplicaState.READY, None

    async def _after_update(self, view: ReadyView) -> None:
        await self._report()
        if self._on_update is not None:
            await self._on_update(view)

    # ---- recovery -------------------------------------------------------------------------------------

    async def stale_head(self) -> ClaimedHead:
        """The stored head this stale replica offers to recover at, read without the seed (unauthenticated).

        ``state.not_stale`` unless stale. The pointer and the transition records from the first to the head
        are read as stored and checked for consistency only (``store.*``): their signature needs the seed.
        The recovery challenge binds them, and :meth:`recover` adopts exactly this head or nothing.
        """
        async with self._lock:
            state = await self._refresh_locked()
            if state is not ReplicaState.STALE:
                raise StateError(
                    "not_stale", f"recovery is only for a stale replica; this one is {state.value}"
                )
            entry = await self._kv.get(LATEST_KEY)
            if entry is None:
                raise StoreError("latest_missing", "the store holds no latest pointer to recover at")
            h, generation = pointer_head(entry.value)  # bounded: at most MAX_RECOVERY_GENERATIONS reads
            records: list[bytes] = []
            for _ in range(generation):
                record = await self._kv.get(transition_key(h))
                if record is None:
                    raise StoreError("missing_transition", f"transition {h.hex()[:16]}… is missing")
                records.append(record.value)
                h = Transition.decode(record.value).previous
            records.reverse()
            return claimed_head(entry.value, records)

    async def recover(
        self,
        seed: bytes,
        salt: bytes,
        *,
        signature: bytes,
        hpke_key: bytes,
        recovery_nonce: bytes,
        bound_head: ClaimedHead,
    ) -> ReadyView:
        """Owner recovery: adopt (seed, salt) at ``bound_head`` if it is the authenticated stored head.

        ``bound_head`` is the head this replica attested in its recovery challenge, which the owner checked
        and bound the sealed seed to. Checks, in order: still stale; the history verifies under the key
        derived from this seed (``auth.wrong_seed`` otherwise); its authenticated head is ``bound_head``
        (``state.recovery_head_changed`` otherwise: the store changed after the challenge); the whole chain
        re-hashes; a seed-share owner of the active manifest signed (seed, salt, our HPKE key, our recovery
        nonce). On any refusal nothing is installed: the replica stays stale and keeps no reference to the
        seed. The root CA is the same as before (it comes from the seed); the mesh CA is new.
        """
        engine = SeedEngine(seed, salt)
        self._check_root(engine)
        history = self._history_for(engine)
        async with self._lock:
            state = await self._refresh_locked()
            if state is not ReplicaState.STALE:
                raise StateError(
                    "not_stale", f"recovery is only for a stale replica; this one is {state.value}"
                )
            try:
                latest = await history.read_latest()
            except StoreError as e:
                if e.code == "store.bad_latest_signature":
                    raise AuthError(
                        "wrong_seed", "the recovered seed does not sign this Coordinator's history"
                    ) from e
                raise
            if latest is None:
                raise StateError("not_stale", "the store holds no history to recover")
            if (latest.generation, latest.transition_hash) != (
                bound_head.generation,
                bound_head.transition_hash,
            ):
                raise StateError(
                    "recovery_head_changed",
                    f"the stored head is generation {latest.generation} "
                    f"({latest.transition_hash.hex()[:16]}…), not the generation {bound_head.generation} "
                    f"({bound_head.transition_hash.hex()[:16]}…) attested in the recovery challenge and "
                    "checked by the seed-share owner: the store changed during recovery; nothing was adopted",
                )
            chain = await history.read_chain(latest)
            doc = chain[-1].manifest
            verify_recovery_signature(
                doc.manifest.SeedshareOwnerPubKeys,
                signature,
                recovery_signing_message(seed, salt, hpke_key, recovery_nonce),
            )
            self._install(engine, history, latest, doc)
            view = self._view()
        await self._after_update(view)
        return view

    async def adopt_join(self, result: JoinResult) -> ReadyView:
        """Peer recovery: adopt the seed and mesh key a ready peer granted, if they match the stored head."""
        keys = result.keys
        engine = SeedEngine(keys.seed, keys.salt)
        self._check_root(engine)
        history = self._history_for(engine)
        if history_key_bytes(engine) != result.keys.history_public_key:
            raise AuthError("bad_join_reply", "the granted seed does not derive the granted history key")
        mesh = keys.mesh_authority()
        async with self._lock:
            state = await self._refresh_locked()
            if state is ReplicaState.READY:
                return self._view()
            latest = await history.read_latest()
            if latest is None or latest.transition_hash != result.transition_hash:
                raise StateError("stale", "the peer's grant is not for the stored head; retrying")
            chain = await history.read_chain(latest)
            self._install(engine, history, latest, chain[-1].manifest, mesh)
            view = self._view()
        await self._report()
        return view


def history_key_bytes(engine: SeedEngine) -> bytes:
    return (
        engine.history_signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
