"""Events of the manifest service (hints for audit, metrics and other replicas; never an authority)."""

from __future__ import annotations

from nats.aio.client import Client

from contrast import subjects
from contrast.coordinator.history import ReplicaState
from contrast.manifest.state import ReadyView
from contrast.runtime import Metrics, get_logger
from contrast.wire.v1 import ManifestReplicaState, ManifestUpdated, encode

_log = get_logger(__name__)


class Events:
    def __init__(self, nc: Client, *, service: str, replica: str, metrics: Metrics) -> None:
        self._nc = nc
        self._service = service
        self._replica = replica
        self._metrics = metrics

    async def state(self, state: ReplicaState, generation: int, fault: str = "") -> None:
        self._metrics.manifest_generation.set(generation)
        _log.info("manifest_state", state=state.value, generation=generation, fault=fault)
        event = ManifestReplicaState(
            service=self._service,
            replica=self._replica,
            state=state.value,
            generation=generation,
            fault=fault,
        )
        await self._publish(subjects.EVENT_STATE, encode(event))

    async def updated(self, view: ReadyView) -> None:
        event = ManifestUpdated(
            replica=self._replica,
            generation=view.latest.generation,
            transition_hash=view.latest.transition_hash,
            manifest_hash=view.manifest.hash,
        )
        await self._publish(subjects.EVENT_MANIFEST_UPDATED, encode(event))

    async def _publish(self, subject: str, data: bytes) -> None:
        if self._nc.is_connected:
            await self._nc.publish(subject, data)
