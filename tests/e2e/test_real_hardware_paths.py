"""The real-hardware path end to end, with fakes only at the true boundaries.

The Coordinator's replicas (manifest service, verifier, CA) get their evidence through configfs-tsm, the
pods through ``/dev/sev-guest``: the kernel's interfaces are fakes (:mod:`contrast.testing.guest`), backed
by the emulated AMD-SP, whose hosts hand out no certificates. Every VCEK, chain and CRL comes from a fake AMD
KDS over HTTPS on loopback (:mod:`contrast.testing.vendor`). The manifest names a real platform
(``Metal-QEMU-SNP``, revocation check on by default), and the emulator's ARK stands in for AMD's in every
verifier object: every step but the root key runs as on real hardware. The owner's ``contrast set`` and
``contrast verify`` and a pod's initializer succeed; a pod whose VCEK AMD revoked does not get a certificate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from cryptography import x509

from contrast.ca.service import make_service as make_ca
from contrast.cli.main import build_parser
from contrast.cli.set_manifest import set_manifest
from contrast.cli.verify import verify
from contrast.collateral.fetch import HttpsFetcher
from contrast.collateral.provider import AttachingPlatform, CollateralProvider
from contrast.collateral.source import CachedSource, Store, VendorSource
from contrast.coordinator.pins import CoordinatorPins
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.evidence.verifier import EvidenceVerifier, VendorRoots
from contrast.initializer.client import AttestationFailed, Initializer, InitializerConfig
from contrast.manifest.service import make_service as make_manifest
from contrast.platform.base import Platform
from contrast.platform.configfs_tsm import ConfigfsTsm
from contrast.platform.sev_guest import SevGuestDevice
from contrast.replica.deps import ReplicaDeps
from contrast.runtime import RuntimeConfig, serve
from contrast.runtime.natsserver import NatsServer
from contrast.testing.guest import FakeSevGuestIoctl, FakeTsmTree, SnpMachine
from contrast.testing.vendor import EmulatedKds, FakeVendor, VendorServer, serve_vendor
from contrast.verifier.service import make_service as make_verifier
from tests.services.pipeline import (
    INITIALIZER_PINS,
    POLICY_CA,
    POLICY_COORD,
    POLICY_VERIFIER,
    REPLICA_PINS,
    ROLE_POLICY,
    connect,
    wait_ready,
)

POLICY_DB = b"package db\ndefault allow := true\n"
H_DB = hashlib.sha256(POLICY_DB).digest()


def standin(snp: EmulatedSnpPlatform, tdx: EmulatedTdxPlatform) -> Callable[[], EvidenceVerifier]:
    roots = VendorRoots(
        amd_arks={bytes.fromhex(snp.root_fingerprint): "Milan"}, intel_root_sha256=tdx.root_fingerprint
    )
    return lambda: EvidenceVerifier(roots)


def provider_factory(server: VendorServer) -> Callable[[Store], CollateralProvider]:
    def build(store: Store) -> CollateralProvider:
        return CollateralProvider(
            CachedSource(VendorSource(HttpsFetcher(server.client_context)), store), server.endpoints
        )

    return build


@dataclass
class Deployment:
    workspace: Path
    nats_url: str
    vendor: VendorServer
    emulator: EmulatedSnpPlatform
    verifier: Callable[[], EvidenceVerifier]

    def cli(self, *argv: str) -> argparse.Namespace:
        return build_parser().parse_args(
            [*argv, "--workspace", str(self.workspace), "--nats", self.nats_url, "--json", "--timeout", "30"]
        )

    def initializer(self, nc: object, *, deadline: float = 30.0) -> Initializer:
        device = self.workspace / "sev-guest"
        device.touch()
        ioctl = FakeSevGuestIoctl(SnpMachine(self.emulator, host_data=H_DB, host_certs=False))
        provider = provider_factory(self.vendor)(_Memory())
        platform = AttachingPlatform(SevGuestDevice(device, ioctl=ioctl), provider)
        config = InitializerConfig(pins=INITIALIZER_PINS, deadline=deadline)
        return Initializer(
            nc=nc,  # type: ignore[arg-type]
            platform=platform,
            config=config,
            verifier=self.verifier(),
            collateral=provider,
        )


class _Memory:
    def __init__(self) -> None:
        self.d: dict[str, bytes] = {}

    async def get(self, key: str) -> object:
        from contrast.kv import KvEntry

        v = self.d.get(key)
        return None if v is None else KvEntry(key, v, 0)

    async def put(self, key: str, value: bytes) -> int:
        self.d[key] = value
        return 0


def reference_values(emu: EmulatedSnpPlatform) -> dict[str, object]:
    ref = msgspec.to_builtins(emu.reference_values())
    ref["Platform"] = "Metal-QEMU-SNP"  # a real platform: AMD's root (here: the stand-in), CRL required
    del ref["EmulatorRootFingerprint"]
    return {"snp": [ref], "tdx": []}


async def configfs_platform(emu: EmulatedSnpPlatform, role: str) -> Platform:
    """A Coordinator service's machine, launched with that service's own policy."""
    host_data = ROLE_POLICY[role]
    tsm = ConfigfsTsm(files=FakeTsmTree(SnpMachine(emu, host_data=host_data, host_certs=False)))
    await tsm.probe()
    return tsm


@contextlib.asynccontextmanager
async def deployment(
    tmp_path: Path, nats: NatsServer, emu: EmulatedSnpPlatform, tdx: EmulatedTdxPlatform, kds: EmulatedKds
) -> AsyncIterator[Deployment]:
    keys = json.loads(
        (
            await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "contrast.cli.main",
                    "keygen",
                    "--rsa-bits",
                    "3072",
                    "--json",
                    "--workspace",
                    str(tmp_path),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
        ).stdout
    )
    manifest = {
        "Policies": {
            **{
                h.hex(): {"SANs": [], "Role": "coordinator", "CoordinatorRole": role}
                for role, h in ROLE_POLICY.items()
            },
            H_DB.hex(): {"SANs": ["db"], "WorkloadSecretID": "db", "Role": ""},
        },
        "ReferenceValues": reference_values(emu),
        "WorkloadOwnerPubKeys": keys["WorkloadOwnerPubKeys"],
        "SeedshareOwnerPubKeys": keys["SeedshareOwnerPubKeys"],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    documents = {"manifest": POLICY_COORD, "verifier": POLICY_VERIFIER, "ca": POLICY_CA, "db": POLICY_DB}
    for name, document in documents.items():
        (tmp_path / f"{name}.rego").write_bytes(document)
    verifier = standin(emu, tdx)
    with serve_vendor(FakeVendor(kds)) as vendor:
        collateral = provider_factory(vendor)
        async with contextlib.AsyncExitStack() as stack:

            def config(replica: str) -> RuntimeConfig:
                return RuntimeConfig(nats_urls=(nats.url,), replica=replica, shutdown_timeout=5.0)

            manifest_service = make_manifest(
                lambda: configfs_platform(emu, "manifest"),
                pins=CoordinatorPins(),
                evidence_verifier=verifier,
                collateral=collateral,
            )
            await stack.enter_async_context(serve(manifest_service, config("manifest-1")))

            def deps(role: str) -> ReplicaDeps:
                return ReplicaDeps(
                    platform=lambda: configfs_platform(emu, role),
                    pins=REPLICA_PINS,
                    evidence_verifier=verifier,
                    collateral=collateral,
                )

            d = Deployment(tmp_path, nats.url, vendor, emu, verifier)
            # The owner's first set (trust on first use), in-process: the CLI's verifier gets the stand-in.
            args = d.cli(
                "set",
                "-m",
                str(tmp_path / "manifest.json"),
                *(str(tmp_path / f"{name}.rego") for name in documents),
            )
            code = await asyncio.to_thread(
                set_manifest, args, verifier=verifier(), provider=collateral(_Memory())
            )
            assert code == 0
            await stack.enter_async_context(serve(make_verifier(deps("verifier")), config("verifier-1")))
            await stack.enter_async_context(serve(make_ca(deps("ca")), config("ca-1")))
            nc = await connect(nats.url)
            stack.push_async_callback(nc.close)
            await wait_ready(nc, "verifier", 1, timeout=60)
            await wait_ready(nc, "ca", 1, timeout=60)
            yield d


async def test_set_attest_and_verify_on_the_real_paths(
    tmp_path: Path,
    private_nats: NatsServer,
    snp_emulator: EmulatedSnpPlatform,
    tdx_emulator: EmulatedTdxPlatform,
) -> None:
    kds = EmulatedKds(snp_emulator)
    async with deployment(tmp_path, private_nats, snp_emulator, tdx_emulator, kds) as d:
        nc = await connect(d.nats_url)
        try:
            creds = await d.initializer(nc).attest()
        finally:
            await nc.close()
        assert creds.bundle.workload_secret_id == "db"
        # The owner verifies the Coordinator: its evidence came with the VCEK, chain and CRL it attached.
        code = await asyncio.to_thread(
            verify, d.cli("verify", "-m", str(tmp_path / "manifest.json"), "--offline"), verifier=d.verifier()
        )
        assert code == 0
        assert d.vendor.vendor.hits("/vcek/v1/Milan/crl") >= 1
        # A pod whose VCEK AMD revokes gets no certificate: the verifier's CRL (re-fetched) names it.
        kds.revoked.add(x509.load_der_x509_certificate(snp_emulator.vcek_der("Milan")).serial_number)
        kds.crl_valid_for = dt.timedelta(days=7)
        nc = await connect(d.nats_url)
        try:
            with pytest.raises(AttestationFailed) as e:
                await d.initializer(nc, deadline=8.0).attest()
        finally:
            await nc.close()
        assert e.value.last.code == "evidence.revoked"
