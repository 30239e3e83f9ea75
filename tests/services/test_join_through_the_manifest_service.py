"""The real join: verifier and CA replicas get their keys from a ready manifest replica, not a fixture."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable

from cryptography import x509

from contrast import subjects
from contrast.ca.service import make_service as make_ca
from contrast.coordinator.pins import CoordinatorPins
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.initializer.client import Initializer, InitializerConfig
from contrast.manifest.service import make_service as make_manifest
from contrast.platform.base import Platform
from contrast.platform.emulated import EmulatedSnp
from contrast.replica.deps import ReplicaDeps
from contrast.replica.membership import JoinKeySource
from contrast.runtime import RuntimeConfig, serve
from contrast.runtime.client import request
from contrast.runtime.natsserver import NatsServer
from contrast.verifier.service import make_service as make_verifier
from contrast.wire.v1 import AttestedReply, SetManifestRequest
from tests.services.pipeline import (
    H_CA,
    H_COORD,
    H_DB,
    H_VERIFIER,
    INITIALIZER_PINS,
    REPLICA_PINS,
    connect,
    manifest_doc,
    wait_ready,
)


def _launched_with(
    snp_emulator: EmulatedSnpPlatform, policy_hash: bytes
) -> Callable[[], Awaitable[Platform]]:
    async def platform() -> Platform:
        return EmulatedSnp(snp_emulator, host_data=policy_hash)

    return platform


async def test_services_join_through_the_manifest_service(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    """Each service on its own policy, bound to its role: verifier and CA join the manifest service (whose
    policy they pin), and a pod trusts answers from the verifier's and the CA's policies."""

    def config(replica: str) -> RuntimeConfig:
        return RuntimeConfig(nats_urls=(private_nats.url,), replica=replica, shutdown_timeout=5.0)

    def deps(policy_hash: bytes) -> ReplicaDeps:
        platform = _launched_with(snp_emulator, policy_hash)
        return ReplicaDeps(platform=platform, key_source=JoinKeySource, pins=REPLICA_PINS)

    async with contextlib.AsyncExitStack() as stack:
        nc = await connect(private_nats.url)
        stack.push_async_callback(nc.close)
        manifest = make_manifest(_launched_with(snp_emulator, H_COORD), pins=CoordinatorPins())
        await stack.enter_async_context(serve(manifest, config("manifest-1")))
        raw, policies = manifest_doc(snp_emulator)
        req = SetManifestRequest(
            nonce=secrets.token_bytes(32), manifest=raw, policies=list(policies.values())
        )
        reply = await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=30)
        await stack.enter_async_context(serve(make_verifier(deps(H_VERIFIER)), config("verifier-1")))
        await stack.enter_async_context(serve(make_ca(deps(H_CA)), config("ca-1")))
        await wait_ready(nc, "verifier", timeout=30)
        await wait_ready(nc, "ca", timeout=30)
        init = Initializer(
            nc=nc,
            platform=EmulatedSnp(snp_emulator, host_data=H_DB),
            config=InitializerConfig(pins=INITIALIZER_PINS, deadline=30),
        )
        creds = await init.attest()
        # The CA signs with the keys the manifest service derived from its seed: the same root and mesh CA.
        assert creds.bundle.root_ca == x509.load_der_x509_certificate(reply.root_ca)
        assert creds.bundle.mesh_ca == x509.load_der_x509_certificate(reply.mesh_ca)
