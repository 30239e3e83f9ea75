"""A whole Coordinator for the operations tests (natscli, /metrics, traces): the manifest service with a
manifest set, verifier and CA replicas that join it for real, each serving ``/metrics`` on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.client import Client
from opentelemetry.sdk.trace import TracerProvider

from contrast import subjects
from contrast.ca.service import make_service as make_ca
from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.statement import spki
from contrast.crypto.hpke import HpkePrivateKey
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.initializer.client import Initializer, InitializerConfig
from contrast.manifest.service import make_service as make_manifest
from contrast.platform.base import Platform
from contrast.platform.emulated import EmulatedSnp
from contrast.replica.deps import ReplicaDeps
from contrast.replica.membership import JoinKeySource
from contrast.runtime import RunningService, RuntimeConfig, serve
from contrast.runtime.client import request
from contrast.verifier.service import make_service as make_verifier
from contrast.wire.v1 import AttestedReply, AttestRequest, SetManifestRequest, encode
from tests.services.pipeline import (
    H_COORD,
    H_DB,
    INITIALIZER_PINS,
    REPLICA_PINS,
    ROLE_POLICY,
    connect,
    manifest_doc,
    wait_ready,
)


@dataclass
class Deployment:
    url: str
    emulator: EmulatedSnpPlatform
    nc: Client
    stack: contextlib.AsyncExitStack
    tracer_provider: TracerProvider | None = None
    running: dict[str, RunningService] = field(default_factory=dict)
    stacks: dict[str, contextlib.AsyncExitStack] = field(default_factory=dict)

    def deps(self, kind: str) -> ReplicaDeps:
        """A verifier or CA replica on its own role's policy, pinning the manifest service's."""

        async def coordinator() -> Platform:
            return EmulatedSnp(self.emulator, host_data=ROLE_POLICY[kind])

        return ReplicaDeps(platform=coordinator, key_source=JoinKeySource, pins=REPLICA_PINS)

    def config(self, replica: str) -> RuntimeConfig:
        return RuntimeConfig(nats_urls=(self.url,), replica=replica, shutdown_timeout=5.0, metrics_port=0)

    async def start(self, kind: str, replica: str) -> RunningService:
        if kind == "manifest":

            async def coordinator() -> Platform:
                return EmulatedSnp(self.emulator, host_data=H_COORD)

            service = make_manifest(coordinator, pins=CoordinatorPins())
        else:
            service = make_verifier(self.deps(kind)) if kind == "verifier" else make_ca(self.deps(kind))
        own = contextlib.AsyncExitStack()
        self.running[replica] = await own.enter_async_context(
            serve(service, self.config(replica), tracer_provider=self.tracer_provider)
        )
        self.stacks[replica] = own
        self.stack.push_async_callback(own.aclose)
        return self.running[replica]

    async def stop(self, replica: str) -> None:
        """Stop one replica gracefully (drained, unsubscribed)."""
        del self.running[replica]
        await self.stacks.pop(replica).aclose()

    def initializer(self, policy_hash: bytes = H_DB, *, deadline: float = 20.0) -> Initializer:
        config = InitializerConfig(pins=INITIALIZER_PINS, deadline=deadline, attempt_timeout=5.0)
        tracer = self.tracer_provider.get_tracer("test-initializer") if self.tracer_provider else None
        platform = EmulatedSnp(self.emulator, host_data=policy_hash)
        return Initializer(nc=self.nc, platform=platform, config=config, tracer=tracer)

    async def unverified_request(self) -> AttestRequest:
        """A well-formed request with genuine emulated evidence but a nonce no verifier issued."""
        tls = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
        hpke = HpkePrivateKey.generate().public_bytes()
        evidence = await EmulatedSnp(self.emulator, host_data=H_DB).evidence(secrets.token_bytes(64))
        return AttestRequest(
            request_id=secrets.token_urlsafe(24),
            nonce=secrets.token_bytes(32),
            evidence=evidence,
            tls_public_key=tls,
            hpke_public_key=hpke,
        )

    async def publish_burst(self, count: int) -> None:
        js = self.nc.jetstream()
        for _ in range(count):
            req = await self.unverified_request()
            await js.publish(
                subjects.attest_requested(subjects.DEFAULT_SOURCE),
                encode(req),
                headers={"Nats-Msg-Id": req.request_id},
            )


@contextlib.asynccontextmanager
async def deployment(
    url: str,
    emulator: EmulatedSnpPlatform,
    *,
    verifiers: int = 2,
    tracer_provider: TracerProvider | None = None,
) -> AsyncIterator[Deployment]:
    async with contextlib.AsyncExitStack() as stack:
        nc = await connect(url)
        stack.push_async_callback(nc.close)
        d = Deployment(url=url, emulator=emulator, nc=nc, stack=stack, tracer_provider=tracer_provider)
        await d.start("manifest", "manifest-1")
        raw, policies = manifest_doc(emulator)
        req = SetManifestRequest(
            nonce=secrets.token_bytes(32), manifest=raw, policies=list(policies.values())
        )
        await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=30)
        for i in range(verifiers):
            await d.start("verifier", f"verifier-{i + 1}")
        await d.start("ca", "ca-1")
        await wait_ready(nc, "verifier", verifiers, timeout=30)
        await wait_ready(nc, "ca", timeout=30)
        yield d


def scrape(port: int) -> tuple[str, str]:
    """GET ``/metrics`` of a replica: (content type, body)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.headers.get("Content-Type", "")), r.read().decode()


async def scrape_all(d: Deployment) -> dict[str, tuple[str, str]]:
    return {
        replica: await asyncio.to_thread(scrape, running.metrics_port)
        for replica, running in d.running.items()
        if running.metrics_port is not None
    }
