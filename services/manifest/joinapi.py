"""The join endpoints of a ready manifest replica (docs/protocol.md §4; the logic is in
:mod:`contrast.replica.join`)."""

from __future__ import annotations

import datetime as dt
import time

from contrast.collateral.provider import CollateralProvider
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.evidence.verifier import EvidenceVerifier
from contrast.kv import KeyValue
from contrast.manifest.state import ManifestReplica
from contrast.replica.join import handle_join, join_nonces
from contrast.runtime import RequestContext
from contrast.wire.v1 import JoinNonceReply, JoinNonceRequest, JoinReply, JoinRequest


class JoinApi:
    def __init__(
        self,
        replica: ManifestReplica,
        *,
        identity: CoordinatorIdentity,
        verifier: EvidenceVerifier,
        marks: KeyValue,
        collateral: CollateralProvider | None = None,
    ) -> None:
        self._replica = replica
        self._identity = identity
        self._verifier = verifier
        self._marks = marks
        self._collateral = collateral

    async def nonce(self, req: JoinNonceRequest, ctx: RequestContext) -> JoinNonceReply:
        view = await self._replica.ready_view()
        return JoinNonceReply(nonce=join_nonces(view.engine).issue(int(time.time() * 1000)))

    async def join(self, req: JoinRequest, ctx: RequestContext) -> JoinReply:
        view = await self._replica.ready_view()
        return await handle_join(
            req,
            authority=view.join_authority(self._identity),
            nonces=join_nonces(view.engine),
            marks=self._marks,
            verifier=self._verifier,
            now=dt.datetime.now(dt.UTC),
            collateral=self._collateral,
        )
