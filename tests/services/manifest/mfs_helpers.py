"""Helpers for the manifest-service and owner-CLI tests: an emulator, manifests that accept it, replicas.

The emulator state (RSA-4096 ARK/ASK) is slow to create, so each test session makes one directory and every
replica and CLI run shares it. Manifests carry the emulator's own reference values, so the evidence that
replicas make is checked exactly as real evidence would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contrast.coordinator.pins import CoordinatorPins
from contrast.crypto.ownerkeys import generate_workload_owner_key, public_key_hex
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.manifest.service import make_service
from contrast.pki.service import ServiceRole
from contrast.platform.emulated import EmulatedSnp, load_snp_emulator
from contrast.runtime import RunningService, RuntimeConfig, serve
from contrast.runtime.natsserver import NatsServer, find_nats_server, start_nats

# One policy per Coordinator service, as `contrast generate` makes them: the manifest service (H_COORD), the
# verifier and the CA. Each is bound to its role in the manifest.
POLICY_COORD = b"package coordinator\n# contrast coordinator policy (test)\ndefault allow := true\n"
POLICY_VERIFIER = b"package coordinator\n# contrast verifier policy (test)\ndefault allow := true\n"
POLICY_CA = b"package coordinator\n# contrast ca policy (test)\ndefault allow := true\n"
POLICY_DB = b"package db\ndefault allow := true\n"
H_COORD = hashlib.sha256(POLICY_COORD).hexdigest()
H_VERIFIER = hashlib.sha256(POLICY_VERIFIER).hexdigest()
H_CA = hashlib.sha256(POLICY_CA).hexdigest()
H_DB = hashlib.sha256(POLICY_DB).hexdigest()
POLICIES = {H_COORD: POLICY_COORD, H_VERIFIER: POLICY_VERIFIER, H_CA: POLICY_CA, H_DB: POLICY_DB}
ROLE_POLICY = {ServiceRole.MANIFEST: H_COORD, ServiceRole.VERIFIER: H_VERIFIER, ServiceRole.CA: H_CA}
# What `generate` pins into a verifier or CA replica: the manifest service's policy.
REPLICA_PINS = CoordinatorPins(policies={ServiceRole.MANIFEST: frozenset({bytes.fromhex(H_COORD)})})
PYTHON = sys.executable


@cache
def owner_key() -> ec.EllipticCurvePrivateKey:
    return generate_workload_owner_key()


@cache
def other_owner_key() -> ec.EllipticCurvePrivateKey:
    return generate_workload_owner_key()


@cache
def share_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@cache
def emulator(emulator_dir: Path) -> EmulatedSnpPlatform:
    """Loading checks the RSA-4096 keys (~2 s), so each process loads the shared state once."""
    return load_snp_emulator(emulator_dir)


def reference_values(emulator_dir: Path) -> dict[str, Any]:
    rv = emulator(emulator_dir).reference_values()
    return {"snp": [msgspec.to_builtins(rv)], "tdx": []}


def manifest_obj(
    emulator_dir: Path,
    *,
    owners: list[str] | None = None,
    shares: list[str] | None = None,
    db_sans: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "Policies": {
            H_COORD: {
                "SANs": ["coordinator"],
                "WorkloadSecretID": "",
                "Role": "coordinator",
                "CoordinatorRole": "manifest",
            },
            H_VERIFIER: {"SANs": [], "Role": "coordinator", "CoordinatorRole": "verifier"},
            H_CA: {"SANs": [], "Role": "coordinator", "CoordinatorRole": "ca"},
            H_DB: {"SANs": db_sans or ["db"], "WorkloadSecretID": "db", "Role": ""},
        },
        "ReferenceValues": reference_values(emulator_dir),
        "WorkloadOwnerPubKeys": [public_key_hex(owner_key())] if owners is None else owners,
        "SeedshareOwnerPubKeys": [public_key_hex(share_key())] if shares is None else shares,
    }


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, indent=2).encode() + b"\n"


def platform_factory(emulator_dir: Path, policy_hash: str = H_COORD):  # type: ignore[no-untyped-def]
    async def factory() -> EmulatedSnp:
        emu = await asyncio.to_thread(emulator, emulator_dir)
        return EmulatedSnp(emu, host_data=bytes.fromhex(policy_hash))

    return factory


@contextlib.asynccontextmanager
async def replica(
    nats_url: str,
    emulator_dir: Path,
    name: str,
    *,
    policy_hash: str = H_COORD,
    peer_interval: float = 0.3,
    pins: CoordinatorPins | None = None,
    platform: Any = None,
) -> AsyncIterator[RunningService]:
    """One in-process manifest replica (``platform``: a factory instead of the emulated default)."""
    factory = platform or platform_factory(emulator_dir, policy_hash)
    service = make_service(factory, peer_interval=peer_interval, pins=pins or CoordinatorPins())
    config = RuntimeConfig(nats_urls=(nats_url,), replica=name, shutdown_timeout=2.0)
    async with serve(service, config) as running:
        yield running


@contextlib.contextmanager
def fresh_nats() -> Iterator[NatsServer]:
    """A private JetStream server: the history bucket has a fixed name, so isolation needs its own server."""
    server = start_nats(binary=find_nats_server())
    try:
        yield server
    finally:
        server.cleanup()


def service_env(emulator_dir: Path, nats_url: str, policy_hash: str = H_COORD) -> dict[str, str]:
    return {
        **os.environ,
        "CONTRAST_PLATFORM": "emulated-snp",
        "CONTRAST_EMULATOR_DIR": str(emulator_dir),
        "CONTRAST_EMULATED_POLICY_HASH": policy_hash,
        "CONTRAST_NATS_URL": nats_url,
        "CONTRAST_LOG_LEVEL": "WARNING",
    }


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


def start_replica_process(
    emulator_dir: Path,
    nats_url: str,
    name: str,
    log_dir: Path,
    *,
    policy_hash: str = H_COORD,
    env: dict[str, str] | None = None,
) -> Proc:
    """A manifest replica as its own process (``python -m contrast.manifest``), for kill/restart tests;
    launched with ``policy_hash`` and the extra environment ``env`` (its measured configuration)."""
    log = open(log_dir / f"{name}-{secrets.token_hex(3)}.log", "wb")  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(
        [PYTHON, "-m", "contrast.manifest", "--replica", name],
        env=service_env(emulator_dir, nats_url, policy_hash) | (env or {}),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Proc(name, process)


class StateWatch:
    """Follows the replicas' ``contrast.v1.events.state`` events (test observer; events are only hints)."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[str, int, str]] = {}
        self._changed = asyncio.Event()
        self._sub: Any = None

    async def start(self, nc: Any) -> StateWatch:
        from contrast import subjects
        from contrast.wire.v1 import ManifestReplicaState, decoder

        async def on_event(msg: Any) -> None:
            ev = decoder(ManifestReplicaState).decode(msg.data)
            self.states[ev.replica] = (ev.state, ev.generation, ev.fault)
            self._changed.set()

        self._sub = await nc.subscribe(subjects.EVENT_STATE, cb=on_event)
        return self

    async def wait(self, replica: str, state: str, timeout: float = 30.0) -> tuple[str, int, str]:
        async with asyncio.timeout(timeout):
            while self.states.get(replica, ("",))[0] != state:
                self._changed.clear()
                await self._changed.wait()
        return self.states[replica]
