"""A whole attestation pipeline for tests: a private nats-server, a manifest for an emulated platform,
the INSECURE fixture key source, verifier and CA replicas (in-process or as real processes), initializers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client

from contrast import subjects
from contrast.ca.service import make_service as make_ca
from contrast.coordinator.manifest_format import ManifestDocument, parse_manifest
from contrast.coordinator.pins import CoordinatorPins
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import (
    DEFAULT_MR_SEAM,
    DEFAULT_TD_ATTRIBUTES,
    DEFAULT_XFAM,
    TCB_EVALUATION_DATA_NUMBER,
    EmulatedTdxPlatform,
)
from contrast.initializer.client import Initializer, InitializerConfig
from contrast.pki.service import ServiceRole
from contrast.platform.base import Platform
from contrast.platform.emulated import TDX_DEFAULT_MRTD, TDX_DEFAULT_RTMRS, EmulatedSnp, EmulatedTdx
from contrast.replica.deps import ReplicaDeps
from contrast.replica.membership import KeySource
from contrast.runtime import RuntimeConfig, serve
from contrast.runtime.jetstream import ensure_kv
from contrast.runtime.kv import NatsKeyValue
from contrast.testing.fixture import FixtureKeySource, FixtureState
from contrast.verifier.service import make_service as make_verifier
from contrast.wire.v1 import ReadinessReply, ReadinessRequest, decoder, encode

POLICY_COORD = b"package contrast.coordinator\ndefault allow := true\n"  # the manifest service
POLICY_VERIFIER = b"package contrast.coordinator\n# verifier\ndefault allow := true\n"
POLICY_CA = b"package contrast.coordinator\n# ca\ndefault allow := true\n"
POLICY_DB = b"package db\ndefault allow := true\n"
POLICY_WEB = b"package web\ndefault allow := true\n"
H_COORD = hashlib.sha256(POLICY_COORD).digest()
H_VERIFIER = hashlib.sha256(POLICY_VERIFIER).digest()
H_CA = hashlib.sha256(POLICY_CA).digest()
ROLE_POLICY = {"manifest": H_COORD, "verifier": H_VERIFIER, "ca": H_CA}
# The initializer sources whose nonce streams the tests' verifiers pull: the default one and three namespaces.
TEST_SOURCES = subjects.parse_sources("tenant-a,tenant-b,mallory")
# What `generate` pins: an initializer trusts the verifier and the CA; they trust the manifest service.
INITIALIZER_PINS = CoordinatorPins(
    policies={ServiceRole.VERIFIER: frozenset({H_VERIFIER}), ServiceRole.CA: frozenset({H_CA})}
)
REPLICA_PINS = CoordinatorPins(policies={ServiceRole.MANIFEST: frozenset({H_COORD})})
H_DB = hashlib.sha256(POLICY_DB).digest()
H_WEB = hashlib.sha256(POLICY_WEB).digest()
H_UNKNOWN = hashlib.sha256(b"not in any manifest").digest()
DB_SECRET_ID = "db-secret"
DB_SANS = ["db.default.svc", "10.0.0.7", "spiffe://cluster/db"]


def tdx_reference_values(emulator: EmulatedTdxPlatform) -> dict[str, Any]:
    return {
        "Platform": "Emulated-TDX",
        "MrTd": TDX_DEFAULT_MRTD.hex(),
        "MrSeam": DEFAULT_MR_SEAM.hex(),
        "Rtmrs": [r.hex() for r in TDX_DEFAULT_RTMRS],
        "Xfam": DEFAULT_XFAM.hex(),
        "TdAttributes": DEFAULT_TD_ATTRIBUTES.hex(),
        "AllowedPIIDs": ["*"],
        "MinTCBEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "AcceptedTCBStatuses": ["UpToDate"],
        "EmulatorRootFingerprint": emulator.root_fingerprint,
    }


def manifest_doc(
    emulator: EmulatedSnpPlatform | EmulatedTdxPlatform, *, web_sans: list[str] | None = None
) -> tuple[bytes, dict[str, bytes]]:
    if isinstance(emulator, EmulatedTdxPlatform):
        refs: dict[str, Any] = {"snp": [], "tdx": [tdx_reference_values(emulator)]}
    else:
        refs = {"snp": [msgspec.to_builtins(emulator.reference_values())], "tdx": []}
    obj: dict[str, Any] = {
        "Policies": {
            H_COORD.hex(): {
                "SANs": [],
                "WorkloadSecretID": "",
                "Role": "coordinator",
                "CoordinatorRole": "manifest",
            },
            H_VERIFIER.hex(): {"SANs": [], "Role": "coordinator", "CoordinatorRole": "verifier"},
            H_CA.hex(): {"SANs": [], "Role": "coordinator", "CoordinatorRole": "ca"},
            H_DB.hex(): {"SANs": DB_SANS, "WorkloadSecretID": DB_SECRET_ID, "Role": ""},
            H_WEB.hex(): {"SANs": web_sans or ["web.default.svc"], "WorkloadSecretID": "", "Role": ""},
        },
        "ReferenceValues": refs,
        "WorkloadOwnerPubKeys": [],
        "SeedshareOwnerPubKeys": [],
    }
    policies = {
        H_COORD.hex(): POLICY_COORD,
        H_VERIFIER.hex(): POLICY_VERIFIER,
        H_CA.hex(): POLICY_CA,
        H_DB.hex(): POLICY_DB,
        H_WEB.hex(): POLICY_WEB,
    }
    return json.dumps(obj, indent=2).encode(), policies


async def connect(url: str) -> Client:
    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)


async def history_kv(nc: Client) -> NatsKeyValue:
    return NatsKeyValue(await ensure_kv(nc.jetstream(), subjects.HISTORY))


async def set_manifest(
    nc: Client, state: FixtureState, raw: bytes, policies: dict[str, bytes]
) -> ManifestDocument:
    doc = parse_manifest(raw)
    await state.set_manifest(await history_kv(nc), doc, policies, now=dt.datetime.now(dt.UTC))
    return doc


async def wait_ready(nc: Client, service: str, count: int = 1, timeout: float = 20.0) -> None:
    """Until ``count`` replicas of ``service`` answer ready (the health endpoint is a queue group: poll)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        ready: set[str] = set()
        for _ in range(6 * count):
            try:
                msg = await nc.request(subjects.health(service), encode(ReadinessRequest()), timeout=0.5)
                r = decoder(ReadinessReply).decode(msg.data)
            except Exception:
                continue
            if r.ready:
                ready.add(r.replica)
        if len(ready) >= count:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{service}: fewer than {count} ready replicas after {timeout} s")


@dataclass
class Pipeline:
    """Everything a test needs to drive attestations against real NATS."""

    url: str
    emulator: EmulatedSnpPlatform | EmulatedTdxPlatform
    state: FixtureState
    manifest: ManifestDocument
    nc: Client
    stack: contextlib.AsyncExitStack
    running: dict[str, Any] = field(default_factory=dict)

    def platform(self, policy_hash: bytes) -> EmulatedSnp | EmulatedTdx:
        if isinstance(self.emulator, EmulatedTdxPlatform):
            return EmulatedTdx(self.emulator, policy_hash=policy_hash)
        return EmulatedSnp(self.emulator, host_data=policy_hash)

    def deps(self, kind: str, **kw: Any) -> ReplicaDeps:
        """A ``kind`` (verifier or CA) replica's dependencies: launched with that role's policy."""
        state = self.state

        async def platform() -> Platform:
            return self.platform(ROLE_POLICY[kind])

        def key_source(replica: str, pins: CoordinatorPins) -> KeySource:
            return FixtureKeySource(state, None, replica, pins)

        kw.setdefault("pins", REPLICA_PINS)
        kw.setdefault("sources", TEST_SOURCES)
        return ReplicaDeps(platform=platform, key_source=key_source, **kw)

    async def start(self, kind: str, replica: str, **kw: Any) -> Any:
        deps = self.deps(kind, **kw)
        service = make_verifier(deps) if kind == "verifier" else make_ca(deps)
        config = RuntimeConfig(nats_urls=(self.url,), replica=replica, shutdown_timeout=5.0)
        running = await self.stack.enter_async_context(serve(service, config))
        self.running[replica] = running
        return running

    def initializer(self, policy_hash: bytes = H_DB, *, deadline: float = 20.0, **kw: Any) -> Initializer:
        kw.setdefault("attempt_timeout", 5.0)
        config = InitializerConfig(pins=INITIALIZER_PINS, deadline=deadline, **kw)
        return Initializer(nc=self.nc, platform=self.platform(policy_hash), config=config)


@contextlib.asynccontextmanager
async def pipeline(
    url: str,
    emulator: EmulatedSnpPlatform | EmulatedTdxPlatform,
    *,
    verifiers: int = 1,
    cas: int = 1,
    fixture_dir: Path | None = None,
) -> AsyncIterator[Pipeline]:
    async with contextlib.AsyncExitStack() as stack:
        nc = await connect(url)
        stack.push_async_callback(nc.close)
        state = FixtureState.generate(fixture_dir)
        raw, policies = manifest_doc(emulator)
        doc = await set_manifest(nc, state, raw, policies)
        p = Pipeline(url=url, emulator=emulator, state=state, manifest=doc, nc=nc, stack=stack)
        for i in range(verifiers):
            await p.start("verifier", f"verifier-{i + 1}")
        for i in range(cas):
            await p.start("ca", f"ca-{i + 1}")
        if verifiers:
            await wait_ready(nc, "verifier", verifiers)
        if cas:
            await wait_ready(nc, "ca", cas)
        yield p


def service_env(url: str, emulator_dir: Path, fixture_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONTRAST_NATS_URL": url,
        "CONTRAST_PLATFORM": "emulated-snp",
        "CONTRAST_EMULATOR_DIR": str(emulator_dir),
        "CONTRAST_INSECURE_FIXTURE_DIR": str(fixture_dir),
        "CONTRAST_LOG_LEVEL": "WARNING",
        **extra,
    }


def spawn_service(kind: str, replica: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A ``kind`` replica as a process, launched by the emulated host with that role's policy."""
    env = {**env, "CONTRAST_EMULATED_POLICY_HASH": ROLE_POLICY[kind].hex()}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "contrast.testing.replica",
            kind,
            "--replica",
            replica,
            "--shutdown-timeout",
            "5",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def gather_bounded(n: int, limit: int, make: Callable[[int], Awaitable[Any]]) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        async with sem:
            return await make(i)

    return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
