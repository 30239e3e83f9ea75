"""The manifest service: wiring of the state machine, the user API, the join endpoints and peer recovery."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import Awaitable, Callable
from typing import Any

from contrast import subjects
from contrast.collateral.provider import AttachingPlatform, CollateralProvider
from contrast.collateral.source import Store
from contrast.coordinator.history import ReplicaState
from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.coordinator.user_protocol import recover_subject
from contrast.errors import StateError, StoreError
from contrast.evidence.verifier import EvidenceVerifier
from contrast.manifest.events import Events
from contrast.manifest.joinapi import JoinApi
from contrast.manifest.peer import PeerRecovery
from contrast.manifest.state import ManifestReplica
from contrast.manifest.userapi import UserApi
from contrast.pki.service import replica_label
from contrast.platform.base import Platform
from contrast.platform.select import platform_from_env
from contrast.runtime import Endpoint, Handlers, Runtime, Service
from contrast.runtime.kv import NatsKeyValue
from contrast.runtime.tasks import stop_task
from contrast.wire.v1 import (
    GetManifestRequest,
    JoinNonceRequest,
    JoinRequest,
    RecoverRequest,
    RecoveryChallengeRequest,
    SetManifestRequest,
    StatusRequest,
)

VERSION = "0.1.0"
PlatformFactory = Callable[[], Awaitable[Platform]]


def make_service(
    platform_factory: PlatformFactory = platform_from_env,
    *,
    peer_interval: float = 1.0,
    pins: CoordinatorPins | None = None,
    evidence_verifier: Callable[[], EvidenceVerifier] = EvidenceVerifier,
    collateral: Callable[[Store], CollateralProvider] = CollateralProvider.build,
) -> Service:
    """The manifest service; tests inject a platform, pins, an evidence verifier (a stand-in vendor root) and
    a collateral provider; production takes the platform and the pins from the environment (a malformed pin
    is a ValueError here, before anything runs) and the pinned roots."""
    pins = pins if pins is not None else CoordinatorPins.from_env(os.environ)

    async def build(rt: Runtime) -> Handlers:
        provider = collateral(NatsKeyValue(await rt.kv(subjects.COLLATERAL)))
        # Everything this replica attests (statements, attested replies, joins) carries its collateral.
        platform = AttachingPlatform(await platform_factory(), provider)
        verifier = evidence_verifier()
        # The statement made at start is this replica's identity for signing join grants (protocol §1).
        identity = await CoordinatorIdentity.create(platform, verifier, dt.datetime.now(dt.UTC))
        history_kv = NatsKeyValue(await rt.kv(subjects.HISTORY))
        marks = NatsKeyValue(await rt.kv(subjects.NONCES))
        await rt.stream(subjects.EVENTS)
        name = replica_label(rt.replica)  # also a subject token: its recovery endpoint
        events = Events(rt.nc, service=rt.service, replica=name, metrics=rt.metrics)
        replica = ManifestReplica(history_kv, on_state=events.state, on_update=events.updated, pins=pins)
        with contextlib.suppress(StoreError):  # recorded as the replica's fault; readiness reports it
            await replica.refresh()
        peer = PeerRecovery(
            rt.nc, replica, platform=platform, verifier=verifier, name=name, pins=pins, interval=peer_interval
        )
        await _run_peer_recovery(rt, peer)
        users = UserApi(
            replica,
            platform=platform,
            identity=identity,
            replica_name=name,
            ready_peer_exists=peer.ready_peer_exists,
        )
        joins = JoinApi(replica, identity=identity, verifier=verifier, marks=marks, collateral=provider)

        async def manifest_ready() -> None:
            if replica.fault is not None:
                raise replica.fault
            if replica.state is not ReplicaState.READY:
                raise StateError(replica.state.value, f"manifest replica is {replica.state.value}")

        return Handlers(
            endpoints=_endpoints(users, joins, name), ready_checks={"manifest_state": manifest_ready}
        )

    return Service(
        name="manifest",
        version=VERSION,
        description="Contrast Coordinator: manifest history, user API, recovery and Coordinator join",
        build=build,
    )


async def _run_peer_recovery(rt: Runtime, peer: PeerRecovery) -> None:
    """Peer recovery in the background, woken by update hints; both stop with the service."""
    sub = await rt.nc.subscribe(subjects.EVENT_MANIFEST_UPDATED, cb=peer.on_update_hint)
    rt.stack.push_async_callback(sub.unsubscribe)
    task = asyncio.create_task(peer.run(), name="peer-recovery")

    rt.stack.push_async_callback(stop_task, task)


def _endpoints(users: UserApi, joins: JoinApi, name: str) -> tuple[Endpoint[Any], ...]:
    """The user API (status, set, get, recovery) and the join endpoints, each with its size and time bound."""
    return (
        Endpoint(
            name="status",
            subject=subjects.USER_STATUS,
            request_type=StatusRequest,
            handler=users.status,
            max_bytes=256,
            timeout=10.0,
        ),
        Endpoint(
            name="set",
            subject=subjects.USER_MANIFEST_SET,
            request_type=SetManifestRequest,
            handler=users.set,
            max_bytes=8 * 1024 * 1024,
            timeout=30.0,
        ),
        Endpoint(
            name="get",
            subject=subjects.USER_MANIFEST_GET,
            request_type=GetManifestRequest,
            handler=users.get,
            max_bytes=256,
            timeout=30.0,
        ),
        Endpoint(
            name="recover-challenge",
            subject=subjects.USER_RECOVER,
            request_type=RecoveryChallengeRequest,
            handler=users.recover_challenge,
            max_bytes=256,
            timeout=10.0,
        ),
        Endpoint(
            name="recover",
            subject=recover_subject(name),
            request_type=RecoverRequest,
            handler=users.recover,
            max_bytes=16 * 1024,
            timeout=30.0,
        ),
        Endpoint(
            name="join-nonce",
            subject=subjects.COORDINATOR_JOIN_NONCE,
            request_type=JoinNonceRequest,
            handler=joins.nonce,
            max_bytes=64,
            timeout=5.0,
        ),
        Endpoint(
            name="join",
            subject=subjects.COORDINATOR_JOIN,
            request_type=JoinRequest,
            handler=joins.join,
            max_bytes=64 * 1024,
            timeout=10.0,
        ),
    )
