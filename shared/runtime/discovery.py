"""The NATS micro-services discovery protocol (``$SRV.PING``, ``$SRV.INFO``, ``$SRV.STATS``), served from our
own endpoint table.

We answer the protocol ourselves (using nats-py's typed response classes) instead of registering through
``nats.micro.add_service`` because its endpoint wrapper serialises handlers, drops queued requests on stop,
and publishes ``repr(exception)`` in replies and in ``$SRV.STATS``. The responses are byte-compatible with
every micro client (``nats micro ls``, ``nats.micro`` in any language).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.service import (
    EndpointInfo,
    EndpointStats,
    ServiceInfo,
    ServicePing,
    ServiceStats,
    ServiceVerb,
    control_subject,
)

from contrast.runtime.logs import get_logger
from contrast.runtime.replies import Intake, ReplyGate

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
_log = get_logger(__name__)


def check_semver(version: str) -> str:
    if not _SEMVER.match(version):
        raise ValueError(f"service version must be semver, got {version!r}")
    return version


class Discovery:
    """Answers the nine ``$SRV`` control subjects (all / by name / by id) for one service instance."""

    def __init__(
        self,
        nc: Client,
        *,
        name: str,
        instance_id: str,
        version: str,
        description: str,
        metadata: Mapping[str, str],
        endpoints: Callable[[], list[tuple[EndpointInfo, EndpointStats]]],
    ) -> None:
        self._nc = nc
        self.name, self.id, self.version = name, instance_id, check_semver(version)
        self._description = description
        self._metadata = dict(metadata)
        self._endpoints = endpoints
        self._started = datetime.now(UTC)
        self._subs: list[Subscription] = []

    def ping(self) -> ServicePing:
        return ServicePing(id=self.id, name=self.name, version=self.version, metadata=self._metadata)

    def info(self) -> ServiceInfo:
        return ServiceInfo(
            name=self.name,
            id=self.id,
            version=self.version,
            description=self._description,
            endpoints=[info for info, _ in self._endpoints()],
            metadata=self._metadata,
        )

    def stats(self) -> ServiceStats:
        return ServiceStats(
            id=self.id,
            name=self.name,
            version=self.version,
            started=self._started,
            endpoints=[stats for _, stats in self._endpoints()],
            metadata=self._metadata,
        )

    async def start(self) -> None:
        handlers: dict[ServiceVerb, Callable[[], dict[str, Any]]] = {
            ServiceVerb.PING: lambda: self.ping().to_dict(),
            ServiceVerb.INFO: lambda: self.info().to_dict(),
            ServiceVerb.STATS: lambda: self.stats().to_dict(),
        }
        gate = ReplyGate(self._nc)
        for verb, build in handlers.items():
            for name, sid in ((None, None), (self.name, None), (self.name, self.id)):
                subject = control_subject(verb, name=name, id=sid)
                intake = gate.intake()
                intake.sub = await self._nc.subscribe(subject, cb=self._responder(build, intake))
                self._subs.append(intake.sub)
        await self._nc.flush()

    def _responder(
        self, build: Callable[[], dict[str, Any]], intake: Intake
    ) -> Callable[[Msg], Awaitable[None]]:
        async def respond(msg: Msg) -> None:
            if not intake.arrived()() or not msg.reply:  # answered at once: from this connection, or not
                return
            try:
                body = json.dumps(build()).encode()
                await self._nc.publish(msg.reply, body)
            except Exception as e:
                _log.warning("discovery_reply_failed", error=type(e).__name__)

        return respond

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as e:  # connection already closed
                _log.debug("discovery_unsubscribe_failed", error=type(e).__name__)
        self._subs.clear()
