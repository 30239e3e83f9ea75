"""A whole Coordinator on this machine, for fault and attack tests and benchmarks. INSECURE: emulated SNP.

:class:`CoordinatorCluster` starts, in a work directory:

- NATS: ``Layout.nats`` ``nats-server`` processes, one cluster (routes, JetStream meta group) when there are
  several, with the least-privilege users of :mod:`contrast.runtime.natsauth` (one per role, one initializer
  user per ``Layout.sources`` entry; ``users=False`` runs without any);
- the Coordinator's services as real processes of their production entry points (``python -m
  contrast.manifest|verifier|ca``, emulated SNP, each service on its own role's policy, verifier and CA
  pinning the manifest service's): each connects as its role's user, with every NATS URL but its own node
  first (replica *i* starts on node *i* mod N), and creates every stream and bucket with
  ``CONTRAST_JS_REPLICAS`` = the number of nodes (3: R3);
- the manifest, set as its first owner (trust on first use) through the user API; verifier and CA replicas
  then join through the manifest service like in production.

It can kill (SIGKILL), stop and restart any replica and any NATS node, pause a node (SIGSTOP) and resume it,
and name the JetStream meta leader and a stream's leader. :meth:`CoordinatorCluster.violations` lists the
permission violations the servers logged: with per-role users, a whole run must have none.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import nats
from nats.aio.client import Client

from contrast import subjects
from contrast.coordinator.pins import POLICY_HASHES_ENV, CoordinatorPins
from contrast.initializer.client import Initializer, InitializerConfig
from contrast.pki.service import ServiceRole
from contrast.platform import emulated
from contrast.platform.emulated import EmulatedSnp
from contrast.runtime.client import request
from contrast.runtime.connection import NatsCredentials, client_options
from contrast.runtime.natsauth import role_users, server_config
from contrast.runtime.natsserver import NatsServer, free_port, start_cluster, start_nats, stop_cluster
from contrast.wire.v1 import AttestedReply, SetManifestRequest

Kind = Literal["manifest", "verifier", "ca"]
KINDS: Final[tuple[Kind, ...]] = ("manifest", "verifier", "ca")
# One policy per Coordinator service, each bound to its role in the manifest.
ROLE_POLICIES: Final[dict[Kind, bytes]] = {
    kind: f"package contrast.coordinator # cluster harness {kind}\n".encode() for kind in KINDS
}
ROLE_HASHES: Final[dict[Kind, bytes]] = {k: hashlib.sha256(doc).digest() for k, doc in ROLE_POLICIES.items()}
POLICY_POD: Final = b"package harness.pod\n"
H_POD: Final = hashlib.sha256(POLICY_POD).digest()
# What generate pins: a pod's initializer trusts the verifier and the CA; they trust the manifest service.
INITIALIZER_PINS: Final = CoordinatorPins(
    policies={ServiceRole(k): frozenset({ROLE_HASHES[k]}) for k in ("verifier", "ca")}
)
REPLICA_PINS: Final = f"manifest:{ROLE_HASHES['manifest'].hex()}"
READY_TIMEOUT: Final = 60.0


def manifest_document(emulator_dir: Path) -> tuple[bytes, list[bytes]]:
    """A manifest with the Coordinator services' policies and one workload policy (``H_POD``) on the
    emulator."""
    emulator = emulated.load_snp_emulator(emulator_dir)
    coordinator: dict[str, Any] = {
        h.hex(): {"SANs": [], "Role": "coordinator", "CoordinatorRole": k} for k, h in ROLE_HASHES.items()
    }
    obj = {
        "Policies": {
            **coordinator,
            H_POD.hex(): {"SANs": ["pod.harness.svc"], "WorkloadSecretID": "harness", "Role": ""},
        },
        "ReferenceValues": {"snp": [msgspec.to_builtins(emulator.reference_values())], "tdx": []},
        "WorkloadOwnerPubKeys": [],
        "SeedshareOwnerPubKeys": [],
    }
    return json.dumps(obj).encode(), [*ROLE_POLICIES.values(), POLICY_POD]


@dataclass(frozen=True)
class Layout:
    nats: int = 3
    manifests: int = 2
    verifiers: int = 2
    cas: int = 2
    sources: tuple[str, ...] = ("tenant-a",)  # namespaces with an initializer user of their own

    def count(self, kind: Kind) -> int:
        return {"manifest": self.manifests, "verifier": self.verifiers, "ca": self.cas}[kind]


@dataclass
class Replica:
    kind: Kind
    name: str
    index: int
    process: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path

    def running(self) -> bool:
        return self.process.poll() is None


@dataclass
class CoordinatorCluster:
    workdir: Path
    emulator_dir: Path
    layout: Layout = field(default_factory=Layout)
    users: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    nodes: list[NatsServer] = field(default_factory=list)
    replicas: dict[str, Replica] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    client_errors: list[str] = field(default_factory=list)
    _clients: list[Client] = field(default_factory=list)

    # ---- lifecycle --------------------------------------------------------------------------------------

    async def __aenter__(self) -> CoordinatorCluster:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(emulated.load_snp_emulator, self.emulator_dir)
        authorization = None
        if self.users:
            names = ["verifier", "ca", "manifest", "owner", "monitor", subjects.DEFAULT_SOURCE]
            self.passwords = {n: secrets.token_urlsafe(18) for n in [*names, *self.layout.sources]}
            authorization = server_config(role_users(self.passwords, sources=self.layout.sources))
        nats_dir = self.workdir / "nats"
        if self.layout.nats > 1:
            self.nodes = await asyncio.to_thread(
                start_cluster, self.layout.nats, root=nats_dir, authorization=authorization
            )
        else:
            nats_dir.mkdir(parents=True, exist_ok=True)
            node = await asyncio.to_thread(start_nats, store_dir=nats_dir, authorization=authorization)
            self.nodes = [node]
        for i in range(self.layout.manifests):
            self.spawn("manifest", i)
        await self.set_manifest()
        for kind in ("verifier", "ca"):
            for i in range(self.layout.count(kind)):
                self.spawn(kind, i)
        await self.wait_ready(list(self.replicas))

    async def close(self) -> None:
        for nc in self._clients:
            with contextlib.suppress(Exception):
                await nc.close()
        self._clients.clear()
        for r in self.replicas.values():
            if r.running():
                with contextlib.suppress(ProcessLookupError):
                    r.process.send_signal(signal.SIGCONT)
                    r.process.send_signal(signal.SIGTERM)
        for r in self.replicas.values():
            try:
                await asyncio.to_thread(r.process.wait, 15)
            except subprocess.TimeoutExpired:
                r.process.kill()
                await asyncio.to_thread(r.process.wait)
        await asyncio.to_thread(stop_cluster, self.nodes)

    # ---- NATS ---------------------------------------------------------------------------------------------

    def urls(self, index: int = 0) -> list[str]:
        """Every node's URL, node ``index`` mod N first: replicas spread over the nodes."""
        urls = [n.url for n in self.nodes]
        k = index % len(urls)
        return urls[k:] + urls[:k]

    def credentials(self, user: str) -> NatsCredentials | None:
        return NatsCredentials(user, self.passwords[user]) if self.users else None

    async def connect(self, user: str, *, index: int = 0, **options: Any) -> Client:
        """A client connection as ``user`` (closed with the cluster). Its connection errors (a node killed
        under it) are kept in :attr:`client_errors` instead of logged: they are what the faults are for."""

        async def keep(e: Exception) -> None:
            self.client_errors.append(f"{user}: {type(e).__name__}: {e}")

        options.setdefault("error_cb", keep)
        nc = await nats.connect(
            self.urls(index),
            dont_randomize=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            ping_interval=5,
            max_outstanding_pings=2,
            **client_options(self.credentials(user), identity=user),
            **options,
        )
        self._clients.append(nc)
        return nc

    def node(self, name: str) -> NatsServer:
        return next(n for n in self.nodes if n.name == name)

    def meta_leader(self) -> NatsServer:
        """The node that leads the JetStream meta group (asked of any live node)."""
        for n in self.nodes:
            if not n.running():
                continue
            with contextlib.suppress(OSError, ValueError):
                meta = n.varz("jsz").get("meta_cluster")
                if isinstance(meta, dict) and meta.get("leader"):
                    return self.node(str(meta["leader"]))
        raise RuntimeError("no JetStream meta leader")

    async def stream_leader(self, nc: Client, stream: str) -> NatsServer:
        info = await nc.jetstream().stream_info(stream)
        if info.cluster is None or not info.cluster.leader:
            raise RuntimeError(f"stream {stream} has no leader")
        return self.node(info.cluster.leader)

    def violations(self) -> list[str]:
        """Permission violations in every node's log (with per-role users there must be none)."""
        out = []
        for n in self.nodes:
            if n.log_path is not None and n.log_path.exists():
                out += [line for line in n.log_path.read_text().splitlines() if "Violation" in line]
        return out

    # ---- the Coordinator's replicas ------------------------------------------------------------------------

    def env(self, kind: Kind, index: int) -> dict[str, str]:
        creds = self.credentials(kind)
        return {
            **os.environ,
            "CONTRAST_NATS_URL": ",".join(self.urls(index)),
            "CONTRAST_JS_REPLICAS": str(3 if len(self.nodes) >= 3 else 1),
            "CONTRAST_PLATFORM": "emulated-snp",
            "CONTRAST_EMULATOR_DIR": str(self.emulator_dir),
            "CONTRAST_EMULATED_POLICY_HASH": ROLE_HASHES[kind].hex(),
            **({} if kind == "manifest" else {POLICY_HASHES_ENV: REPLICA_PINS}),
            "CONTRAST_LOG_LEVEL": "WARNING",
            **(creds.env() if creds else {}),
            **({"CONTRAST_SOURCES": ",".join(self.layout.sources)} if kind == "verifier" else {}),
            **self.extra_env,
        }

    def spawn(self, kind: Kind, index: int, *, name: str | None = None) -> Replica:
        """Start replica ``index`` of ``kind`` (named ``<kind>-<index+1>`` unless ``name`` is given)."""
        name = name or f"{kind}-{index + 1}"
        port = free_port()
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", f"contrast.{kind}", "--replica", name, "--metrics-port", str(port)]
        argv += ["--shutdown-timeout", "5"]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                env=self.env(kind, index),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        replica = Replica(kind, name, index, process, port, log_path)
        self.replicas[name] = replica
        return replica

    def kill(self, name: str) -> None:
        r = self.replicas[name]
        r.process.kill()
        r.process.wait(10)

    def restart(self, name: str) -> Replica:
        """Start a killed or stopped replica again under its name (a new process, as Kubernetes would)."""
        r = self.replicas[name]
        if r.running():
            raise RuntimeError(f"{name} is still running")
        return self.spawn(r.kind, r.index, name=name)

    def of(self, kind: Kind) -> list[Replica]:
        return [r for r in self.replicas.values() if r.kind == kind]

    async def wait_ready(self, names: list[str], timeout: float = READY_TIMEOUT) -> None:
        """Until every named replica answers ``/readyz`` with 200 (joined, manifest loaded)."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            for name in list(pending):
                r = self.replicas[name]
                if not r.running():
                    raise RuntimeError(f"{name} exited with {r.process.returncode}: {_tail(r.log_path)}")
                if await asyncio.to_thread(_ready, r.metrics_port):
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(
                    f"not ready after {timeout} s: {pending}; {_tail(self.replicas[pending[0]].log_path)}"
                )
            if pending:
                await asyncio.sleep(0.2)

    async def set_manifest(self, timeout: float = READY_TIMEOUT) -> AttestedReply:
        """The first ``set`` (trust on first use), retried until a manifest replica answers."""
        raw, policies = await asyncio.to_thread(manifest_document, self.emulator_dir)
        nc = await self.connect("owner")
        deadline = time.monotonic() + timeout
        while True:
            req = SetManifestRequest(nonce=secrets.token_bytes(32), manifest=raw, policies=policies)
            try:
                return await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=10)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    # ---- workloads -----------------------------------------------------------------------------------------

    def initializer(
        self, nc: Client, source: str, *, deadline: float = 60.0, attempt_timeout: float = 15.0
    ) -> Initializer:
        """An emulated pod's initializer (policy ``H_POD``) of ``source``, on ``nc`` (connected as it)."""
        emulator = emulated.load_snp_emulator(self.emulator_dir)
        config = InitializerConfig(
            pins=INITIALIZER_PINS,
            deadline=deadline,
            attempt_timeout=attempt_timeout,
        )
        return Initializer(
            nc=nc, platform=EmulatedSnp(emulator, host_data=H_POD), config=config, source=source
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""
