"""Peer recovery: a stale or new manifest replica joins a ready peer as role ``manifest`` by itself.

The loop re-verifies the stored head every ``interval`` seconds (and at once on a
``contrast.v1.events.manifest.updated`` hint). While this replica is stale it asks the queue group of manifest
replicas for a join nonce and joins; a ready peer checks that this replica's policy is bound to the
``manifest`` role and that it runs exactly the peer's own code before it seals the seed and the mesh key to
this replica's attested key (:func:`contrast.replica.join.answer_join`). This replica in turn accepts the
grant only from its own exact code, at a TCB at least its own, and under its pinned root if it has one.
No owner has to act. The seed-share owners' ``contrast recover`` is needed only when no replica is ready.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from contrast import subjects
from contrast.coordinator.history import ReplicaState
from contrast.coordinator.pins import CoordinatorPins
from contrast.errors import ContrastError
from contrast.evidence.verifier import EvidenceVerifier
from contrast.manifest.state import ManifestReplica
from contrast.pki.service import ServiceRole
from contrast.platform.base import Platform
from contrast.replica.join import join_once
from contrast.runtime import get_logger, request
from contrast.runtime.tracing import ATTR_ROLE, current_tracer
from contrast.wire.v1 import JoinNonceReply, JoinNonceRequest

PROBES: Final = 6
PROBE_TIMEOUT: Final = 0.5

_log = get_logger(__name__)


class PeerRecovery:
    def __init__(
        self,
        nc: Client,
        replica: ManifestReplica,
        *,
        platform: Platform,
        verifier: EvidenceVerifier,
        name: str,
        pins: CoordinatorPins,
        interval: float = 1.0,
    ) -> None:
        self._nc = nc
        self._pins = pins
        self._replica = replica
        self._platform = platform
        self._verifier = verifier
        self._name = name
        self._interval = interval
        self._wake = asyncio.Event()

    async def on_update_hint(self, _msg: Msg) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except ContrastError as e:
                _log.info("peer_recovery_pending", code=e.code, detail=e.message[:200])
            except Exception as e:  # the loop must survive anything a hostile bus can cause
                _log.warning("peer_recovery_error", error=type(e).__name__)
            try:
                jitter = self._interval * (0.75 + secrets.randbelow(500) / 1000)
                await asyncio.wait_for(self._wake.wait(), timeout=jitter)
            except TimeoutError:
                pass
            self._wake.clear()

    async def step(self) -> None:
        if await self._replica.refresh() is not ReplicaState.STALE:
            return
        with current_tracer().start_as_current_span(
            "join", kind=SpanKind.INTERNAL, attributes={ATTR_ROLE: ServiceRole.MANIFEST.value}
        ):
            result = await join_once(
                self._nc,
                self._platform,
                ServiceRole.MANIFEST,
                replica=self._name,
                verifier=self._verifier,
                pins=self._pins,
                attempt_timeout=2.0,
                now=dt.datetime.now(dt.UTC),
            )
            view = await self._replica.adopt_join(result)
        _log.info("peer_recovered", generation=view.latest.generation)

    async def ready_peer_exists(self) -> bool:
        """Whether some manifest replica answers join-nonce requests (only ready ones can).

        The endpoint is a queue group that this stale replica is part of too, so a few probes are made; an
        answer proves a ready peer, silence proves nothing more than "none found". A forged answer on the bus
        can only make recovery refuse (the owner then passes --force); it cannot make it proceed.
        """
        for _ in range(PROBES):
            try:
                await request(
                    self._nc,
                    subjects.COORDINATOR_JOIN_NONCE,
                    JoinNonceRequest(),
                    JoinNonceReply,
                    timeout=PROBE_TIMEOUT,
                )
                return True
            except ContrastError:
                continue
        return False
