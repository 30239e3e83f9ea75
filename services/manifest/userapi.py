"""The user API handlers: ``status``, ``set``, ``get`` and the two steps of ``recover``.

Every reply that a relying party depends on is an :class:`~contrast.wire.v1.AttestedReply` (``status``: an
:class:`~contrast.wire.v1.AttestedStatus`) with fresh evidence (:mod:`contrast.coordinator.user_protocol`).
Handlers never trust a request field for identity; the owners' authority comes from signatures checked in
:mod:`contrast.coordinator.authorize` and :mod:`contrast.crypto.seedshare`.

A stale replica refuses ``get`` and ``set`` with ``state.replica_stale`` while a ready peer answers (it will
recover from that peer; the caller retries and may reach the peer), and with ``state.recovery_needed`` when
none does, so that an owner learns at once that only ``contrast recover`` helps.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from cryptography.hazmat.primitives import serialization

from contrast.coordinator.recovery_head import ClaimedHead
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.coordinator.user_protocol import (
    open_recovery_secret,
    recovery_report_data,
    status_report_data,
    user_api_report_data,
)
from contrast.errors import PolicyError, StateError
from contrast.manifest.state import ManifestReplica, ReadyView, history_key_bytes
from contrast.platform.base import Platform
from contrast.runtime import RequestContext
from contrast.wire.v1 import (
    AttestedReply,
    AttestedStatus,
    CoordinatorStatus,
    GetManifestRequest,
    HistoryExport,
    RecoverRequest,
    RecoverResult,
    RecoveryChallenge,
    RecoveryChallengeRequest,
    SetManifestRequest,
    SetManifestResult,
    StatusRequest,
    encode_deterministic,
)

RECOVERY_NONCE_LIFETIME: Final = 120.0
MAX_OPEN_CHALLENGES: Final = 16

PeerProbe = Callable[[], Awaitable[bool]]
T = TypeVar("T")


@dataclass
class _Challenges:
    """Outstanding one-time recovery nonces of this replica, each with the head its challenge attested.

    Bounded; expired ones are dropped.
    """

    open: dict[bytes, tuple[float, ClaimedHead]] = field(default_factory=dict)

    def new(self, head: ClaimedHead) -> bytes:
        now = time.monotonic()
        self.open = {n: v for n, v in self.open.items() if v[0] > now}
        while len(self.open) >= MAX_OPEN_CHALLENGES:
            self.open.pop(next(iter(self.open)))
        nonce = secrets.token_bytes(32)
        self.open[nonce] = (now + RECOVERY_NONCE_LIFETIME, head)
        return nonce

    def take(self, nonce: bytes) -> ClaimedHead:
        """The head attested with ``nonce``; the nonce is used up whatever happens next."""
        entry = self.open.pop(nonce, None)
        if entry is None:
            raise PolicyError("nonce_unknown", "this replica issued no such recovery nonce (or it was used)")
        expiry, head = entry
        if expiry < time.monotonic():
            raise PolicyError("nonce_expired", "the recovery nonce has expired; start again")
        return head


class UserApi:
    """Handlers of the user-facing endpoints of one manifest replica."""

    def __init__(
        self,
        replica: ManifestReplica,
        *,
        platform: Platform,
        identity: CoordinatorIdentity,
        replica_name: str,
        ready_peer_exists: PeerProbe,
    ) -> None:
        self._replica = replica
        self._platform = platform
        self._identity = identity
        self._name = replica_name
        self._ready_peer_exists = ready_peer_exists
        self._challenges = _Challenges()

    async def _attest(self, nonce: bytes, view: ReadyView, payload: bytes) -> AttestedReply:
        th = view.latest.transition_hash
        rd = user_api_report_data(nonce, th, view.root_ca_der, view.mesh_ca_der, payload)
        evidence = await self._platform.evidence(rd)
        return AttestedReply(
            payload=payload,
            transition_hash=th,
            root_ca=view.root_ca_der,
            mesh_ca=view.mesh_ca_der,
            evidence=evidence,
        )

    async def _serving(self, step: Awaitable[T]) -> T:
        """``await step``; a stale refusal becomes ``state.recovery_needed`` when no ready peer answers."""
        try:
            return await step
        except StateError as e:
            if e.code != "state.replica_stale" or await self._ready_peer_exists():
                raise
            raise StateError(
                "recovery_needed",
                "this manifest replica is stale and no ready replica answers: the Coordinator waits for a "
                "seed-share owner's `contrast recover`",
            ) from e

    async def status(self, req: StatusRequest, ctx: RequestContext) -> AttestedStatus:
        state = await self._replica.refresh()
        payload = encode_deterministic(
            CoordinatorStatus(replica=self._name, state=state.value, generation=self._replica.generation)
        )
        evidence = await self._platform.evidence(status_report_data(req.nonce, payload))
        return AttestedStatus(payload=payload, evidence=evidence)

    async def set(self, req: SetManifestRequest, ctx: RequestContext) -> AttestedReply:
        outcome = await self._serving(
            self._replica.set_manifest(
                req.manifest, req.policies, signature=req.signature, expected_previous=req.expected_previous
            )
        )
        view = outcome.view
        result = SetManifestResult(
            generation=view.latest.generation,
            transition_hash=view.latest.transition_hash,
            manifest_hash=view.manifest.hash,
            seed_shares=outcome.seed_shares,
        )
        return await self._attest(req.nonce, view, encode_deterministic(result))

    async def get(self, req: GetManifestRequest, ctx: RequestContext) -> AttestedReply:
        view = await self._serving(self._replica.ready_view())
        chain = await view.history.read_chain(view.latest)
        transitions = [e.transition.encode() for e in chain]
        manifests: list[bytes] = []
        seen_manifests: set[bytes] = set()
        policy_hashes: list[str] = []
        for e in chain:
            if e.manifest.hash not in seen_manifests:
                seen_manifests.add(e.manifest.hash)
                manifests.append(e.manifest.raw)
            policy_hashes += [h for h in e.manifest.manifest.Policies if h not in policy_hashes]
        policies = [await view.history.read_policy(bytes.fromhex(h)) for h in policy_hashes]
        # The chain we just walked must still end at the head we attest to.
        if chain[-1].transition_hash != view.latest.transition_hash:
            raise StateError("replica_stale", "the history moved while it was read; retry")
        export = HistoryExport(
            generation=view.latest.generation,
            latest_pointer=view.latest.raw_pointer,
            history_public_key=history_key_bytes(view.engine),
            intermediate=view.mesh.intermediate.public_bytes(serialization.Encoding.DER),
            transitions=transitions,
            manifests=manifests,
            policies=policies,
        )
        return await self._attest(req.nonce, view, encode_deterministic(export))

    async def _refuse_if_peer_ready(self, force: bool) -> None:
        if not force and await self._ready_peer_exists():
            raise StateError(
                "peer_ready",
                "a ready manifest replica exists; this one recovers from it by itself "
                "(use --force to recover anyway)",
            )

    async def recover_challenge(
        self, req: RecoveryChallengeRequest, ctx: RequestContext
    ) -> RecoveryChallenge:
        head = await self._replica.stale_head()
        await self._refuse_if_peer_ready(req.force)
        recovery_nonce = self._challenges.new(head)
        hpke_key = self._identity.hpke_key.public_bytes()
        transitions = list(head.transitions)
        rd = recovery_report_data(req.nonce, hpke_key, recovery_nonce, head.pointer, transitions)
        return RecoveryChallenge(
            replica=self._name,
            hpke_key=hpke_key,
            recovery_nonce=recovery_nonce,
            head_pointer=head.pointer,
            head_transitions=transitions,
            evidence=await self._platform.evidence(rd),
        )

    async def recover(self, req: RecoverRequest, ctx: RequestContext) -> AttestedReply:
        head = self._challenges.take(req.recovery_nonce)
        if (req.head_generation, req.head_transition) != (head.generation, head.transition_hash):
            raise PolicyError(
                "recovery_head_mismatch",
                f"the request names generation {req.head_generation}, but this replica's challenge attested "
                f"generation {head.generation} ({head.transition_hash.hex()[:16]}…); start again",
            )
        await self._refuse_if_peer_ready(req.force)
        # The context binds the head this replica attested: a seed sealed for another head does not open.
        seed, salt = open_recovery_secret(
            self._identity.hpke_key,
            req.recovery_nonce,
            head.generation,
            head.transition_hash,
            req.sealed_secret,
        )
        view = await self._replica.recover(
            seed,
            salt,
            signature=req.signature,
            hpke_key=self._identity.hpke_key.public_bytes(),
            recovery_nonce=req.recovery_nonce,
            bound_head=head,
        )
        result = RecoverResult(generation=view.latest.generation, transition_hash=view.latest.transition_hash)
        return await self._attest(req.nonce, view, encode_deterministic(result))
