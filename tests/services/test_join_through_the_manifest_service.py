"""The real join: verifier and CA replicas get their keys from a ready manifest replica, not a fixture."""

from __future__ import annotations

import contextlib
import secrets

from cryptography import x509

from contrast import subjects
from contrast.ca.service import make_service as make_ca
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.initializer.client import Initializer, InitializerConfig
from contrast.manifest.service import make_service as make_manifest
from contrast.platform.base import Platform
from contrast.platform.emulated import EmulatedSnp
from contrast.replica.deps import ReplicaDeps
from contrast.replica.membership import JoinKeySource, KeySource
from contrast.runtime import RuntimeConfig, serve
from contrast.runtime.client import request
from contrast.runtime.natsserver import NatsServer
from contrast.verifier.service import make_service as make_verifier
from contrast.wire.v1 import AttestedReply, SetManifestRequest
from tests.services.pipeline import H_COORD, H_DB, connect, manifest_doc, wait_ready


async def test_services_join_through_the_manifest_service(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async def coordinator_platform() -> Platform:
        return EmulatedSnp(snp_emulator, host_data=H_COORD)

    def join(replica: str) -> KeySource:
        return JoinKeySource(replica)

    def config(replica: str) -> RuntimeConfig:
        return RuntimeConfig(nats_urls=(private_nats.url,), replica=replica, shutdown_timeout=5.0)

    deps = ReplicaDeps(platform=coordinator_platform, key_source=join)
    async with contextlib.AsyncExitStack() as stack:
        nc = await connect(private_nats.url)
        stack.push_async_callback(nc.close)
        await stack.enter_async_context(serve(make_manifest(coordinator_platform), config("manifest-1")))
        raw, policies = manifest_doc(snp_emulator)
        req = SetManifestRequest(
            nonce=secrets.token_bytes(32), manifest=raw, policies=list(policies.values())
        )
        reply = await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=30)
        await stack.enter_async_context(serve(make_verifier(deps), config("verifier-1")))
        await stack.enter_async_context(serve(make_ca(deps), config("ca-1")))
        await wait_ready(nc, "verifier", timeout=30)
        await wait_ready(nc, "ca", timeout=30)
        init = Initializer(
            nc=nc,
            platform=EmulatedSnp(snp_emulator, host_data=H_DB),
            config=InitializerConfig(coordinator_policy_hashes=frozenset({H_COORD}), deadline=30),
        )
        creds = await init.attest()
        # The CA signs with the keys the manifest service derived from its seed: the same root and mesh CA.
        assert creds.bundle.root_ca == x509.load_der_x509_certificate(reply.root_ca)
        assert creds.bundle.mesh_ca == x509.load_der_x509_certificate(reply.mesh_ca)
