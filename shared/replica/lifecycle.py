"""The life of a Coordinator replica (verifier or CA): identity, join, authenticated manifest, readiness.

A replica starts not ready. In the background it joins through its
:class:`~contrast.replica.membership.KeySource`, which makes a fresh :class:`CoordinatorIdentity` (keys
bound by the platform's evidence), retrying with backoff. It then reads the current manifest through the
authenticated history (every read re-hashes and checks the history key's signature; a tampered store raises
``store.*`` and the replica says so instead of serving). A ``contrast.v1.events.manifest.updated`` event --
which anyone can forge, so it is only a hint -- triggers a re-read; a replica whose role keys belong to an
older head (a CA) joins again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind, Status, StatusCode

from contrast import subjects
from contrast.coordinator.history import History
from contrast.coordinator.manifest_format import ManifestDocument
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.errors import ContrastError, StateError, StoreError
from contrast.evidence.verifier import EvidenceVerifier
from contrast.kv import KeyValue
from contrast.pki.service import ServiceRole
from contrast.platform.base import Platform
from contrast.replica.membership import KeySource, Membership
from contrast.runtime.logs import get_logger
from contrast.runtime.metrics import Metrics
from contrast.runtime.tasks import stop_task
from contrast.runtime.tracing import ATTR_ROLE, current_tracer

_log = get_logger(__name__)
REFRESH_INTERVAL = 30.0  # periodic authenticated re-read, in case an update event was lost or suppressed
RENEW_BEFORE = dt.timedelta(days=2)  # re-join this long before our service certificate expires


@dataclass(frozen=True, slots=True)
class CurrentManifest:
    """The manifest at the verified head of the history."""

    generation: int
    transition_hash: bytes
    document: ManifestDocument


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """A consistent snapshot for one request: identity, membership and manifest."""

    identity: CoordinatorIdentity
    membership: Membership
    manifest: CurrentManifest


class CoordinatorReplica:
    def __init__(
        self,
        *,
        role: ServiceRole,
        platform: Callable[[], Awaitable[Platform]],
        key_source: KeySource,
        history_kv: KeyValue,
        nc: Client,
        verifier: EvidenceVerifier,
        rejoin_on_new_head: bool,
        metrics: Metrics | None = None,
    ) -> None:
        self.role = role
        self._platform_factory = platform
        self._key_source = key_source
        self._kv = history_kv
        self._nc = nc
        self._verifier = verifier
        self._rejoin = rejoin_on_new_head
        self._metrics = metrics
        self._platform: Platform | None = None
        self._membership: Membership | None = None
        self._manifest: CurrentManifest | None = None
        self._problem = "joining"
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._checked_at = float("-inf")  # time.monotonic() of the last successful authenticated read

    # ---- lifecycle --------------------------------------------------------------------------------------

    async def __aenter__(self) -> CoordinatorReplica:
        self._sub = await self._nc.subscribe(subjects.EVENT_MANIFEST_UPDATED, cb=self._on_update)
        self._task = asyncio.create_task(self._loop(), name=f"{self.role.value}-membership")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_task(self._task)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def _on_update(self, _msg: Msg) -> None:
        self._wake.set()  # unauthenticated hint: we only re-read the authenticated history

    async def _loop(self) -> None:
        attempt = 0
        while True:
            try:
                await self.refresh()
                attempt = 0
                timeout = REFRESH_INTERVAL
            except ContrastError as e:
                # A tampered store, stale keys or no state at all: refuse to serve and say why. A transient
                # read failure (NATS restarting) keeps the last *verified* state in service.
                if isinstance(e, (StoreError, StateError)) or self._manifest is None:
                    self._problem = f"{e.code}: {e.message}"
                _log.warning("replica_not_ready", role=self.role.value, code=e.code, detail=e.message[:200])
                attempt += 1
                timeout = random.uniform(0, min(5.0, 0.2 * 2**attempt))
            except Exception as e:  # platform or connection trouble: keep trying, never crash the replica
                if self._manifest is None:
                    self._problem = f"internal: {type(e).__name__}"
                _log.warning("replica_not_ready", role=self.role.value, error=type(e).__name__)
                attempt += 1
                timeout = random.uniform(0, min(5.0, 0.2 * 2**attempt))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def refresh(self) -> None:
        """Join if needed, re-read the authenticated head and manifest, re-join on a new head if the role
        keys depend on it."""
        async with self._lock:
            await self._refresh_locked()

    async def current(self, max_age: float) -> ReplicaView:
        """A view whose head was re-read from the authenticated history at most ``max_age`` seconds ago.

        For decisions that must be made against the *current* generation (the CA's issuance): without it, a
        replica would learn of an update only from the forgeable event or its periodic re-read. Concurrent
        callers share one read. A failed read is ``state.unavailable`` (retried), never a pass.
        """
        async with self._lock:
            if time.monotonic() - self._checked_at > max_age:
                try:
                    await self._refresh_locked()
                except ContrastError:
                    raise
                except Exception as e:
                    raise StateError("unavailable", f"cannot re-read the history: {type(e).__name__}") from e
        return self.view()

    async def _refresh_locked(self) -> None:
        if self._platform is None:
            self._platform = await self._platform_factory()
        if self._membership is None:
            self._membership = await self._join(self._platform)
        elif self._membership.service_cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
            # Service certificates are short-lived (30 days): join again before the CA would refuse ours.
            # Until that works, the current certificate stays in service while it is valid.
            try:
                self._membership = await self._join(self._platform)
            except ContrastError as e:
                _log.warning("renewal_failed", role=self.role.value, code=e.code)
        history = History(self._kv, self._membership.history_key)
        head = await history.read_latest()
        if head is None:
            raise StateError("uninitialized", "the history is empty")
        if head.generation < self._membership.generation:
            raise StateError("rollback", "the stored history is older than our membership")
        if self._rejoin and head.transition_hash != self._membership.transition_hash:
            self._membership = await self._join(self._platform)
            if self._membership.transition_hash != head.transition_hash:
                raise StateError("stale", "joined keys do not belong to the current head yet")
        if self._manifest is None or self._manifest.transition_hash != head.transition_hash:
            doc = await history.read_manifest(head.manifest_hash)
            self._manifest = CurrentManifest(
                generation=head.generation, transition_hash=head.transition_hash, document=doc
            )
            _log.info("manifest_loaded", role=self.role.value, generation=head.generation)
            if self._metrics is not None:
                self._metrics.manifest_generation.set(head.generation)
        self._problem = ""
        self._checked_at = time.monotonic()

    async def _join(self, platform: Platform) -> Membership:
        """One join (with the key source's own retries) as a span of this service's trace: the manifest
        replica's join endpoints continue it."""
        with current_tracer().start_as_current_span(
            "join", kind=SpanKind.INTERNAL, attributes={ATTR_ROLE: self.role.value}
        ) as span:
            try:
                membership = await self._key_source.join(self._nc, platform, self.role, self._verifier)
            except ContrastError as e:
                span.set_status(Status(StatusCode.ERROR, e.code))
                raise
            span.set_attribute("contrast.generation", membership.generation)
            return membership

    def poke(self) -> None:
        """Ask for a refresh soon (e.g. a verdict named a newer generation)."""
        self._wake.set()

    # ---- use ------------------------------------------------------------------------------------------

    def view(self) -> ReplicaView:
        if self._membership is None or self._manifest is None or self._problem:
            raise StateError("not_ready", f"this {self.role.value} replica is not ready ({self._problem})")
        m = self._membership
        return ReplicaView(identity=m.identity, membership=m, manifest=self._manifest)

    async def ready_check(self) -> None:
        self.view()
