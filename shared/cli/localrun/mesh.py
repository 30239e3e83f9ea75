"""The service mesh in the local run: calls between pods go through real sidecars; applications speak TCP.

On a cluster each pod has its own network namespace, and TPROXY hands its inbound connections to the sidecar.
Here the emulated pods share the host's network, so the run stands in for what the pod network provides, and
for nothing else. Each sidecar is ``python -m contrast.meshproxy`` (this interpreter) with exactly the mesh
configuration ``generate`` pinned for it (its ``CONTRAST_*`` environment), plus ``--redirect none`` and:

- a forward per port the pod's application serves, on a free loopback port (the pod's address);
- its egress listeners moved to free loopback ports (every pod would have a loopback of its own);
- for an egress remote that names another pod of the run (its first DNS label), a ``--resolve`` to that pod's
  forward (cluster DNS and the Service); the certificate is still checked for the remote host.

The runner plays the applications: a plain-TCP server per pod that serves ports, and the calling client.
It then proves: a pod's call through both sidecars is accepted and the serving application reads
plaintext; a client without a mesh certificate is served on a port whose rule terminates TLS without one
(``<name>#<port>#false``); and the serving sidecar refuses an unattested client (a self-signed certificate
with the caller's name) and a plaintext client, saying why (its ``contrast_mesh_handshake_failures_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from contrast.cli.localrun import mtls
from contrast.cli.localrun.host import EmulatedPod
from contrast.cli.localrun.metrics import scrape
from contrast.cli.localrun.procs import Child, spawn
from contrast.mesh import config as mc
from contrast.runtime.natsserver import free_port

IO_TIMEOUT = 5.0
REQUEST = b"GET /emojis\n"
FAILURES = "contrast_mesh_handshake_failures_total"


@dataclass
class App:
    """A pod's plain-TCP application: answers each request line with ``hello from <pod>: <line>``."""

    pod: str
    server: asyncio.Server | None = None
    port: int = 0
    received: list[str] = field(default_factory=list)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), IO_TIMEOUT)).decode(errors="replace").strip()
            self.received.append(line)
            writer.write(f"hello from {self.pod}: {line}\n".encode())
            await writer.drain()
            writer.write_eof()
            await asyncio.wait_for(reader.read(), IO_TIMEOUT)  # until the caller ends too
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class Sidecar:
    pod: EmulatedPod
    tls: Path  # the pod's tls-config, written by its initializer
    ingress: mc.Ingress
    egress: tuple[mc.EgressRule, ...]
    admin_port: int = field(default_factory=free_port)
    forwards: dict[int, int] = field(default_factory=dict)  # pod port -> loopback port standing in for it
    local_egress: dict[str, int] = field(default_factory=dict)  # egress rule -> loopback port
    resolve: dict[str, tuple[str, int]] = field(default_factory=dict)  # egress rule -> (pod, pod port)
    child: Child | None = None

    @property
    def label(self) -> str:
        return f"sidecar-{self.pod.name}"

    def environment(self, app: App | None) -> dict[str, str]:
        egress = "##".join(
            f"{r.name}#127.0.0.1:{self.local_egress[r.name]}#{_hostport(r.remote_host, r.remote_port)}"
            for r in self.egress
        )
        forwards = [
            f"{p}@127.0.0.1:{local}->127.0.0.1:{app.port}" for p, local in self.forwards.items() if app
        ]
        return {
            **os.environ,
            # The mesh configuration generate pinned (not the image's PATH: this sidecar is this interpreter).
            **{k: v for k, v in (self.pod.mesh or {}).items() if k.startswith("CONTRAST_")},
            mc.EGRESS_ENV: egress,
            mc.ADMIN_PORT_ENV: str(self.admin_port),
            "CONTRAST_METRICS_ADDR": "127.0.0.1",
            "CONTRAST_REPLICA": self.label,
            "CONTRAST_MESH_REDIRECT": "none",
            "CONTRAST_MESH_TLS_DIR": str(self.tls),
            "CONTRAST_MESH_FORWARD": ",".join(forwards),
        }


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Call:
    """An egress rule of one pod whose remote is another pod of the run."""

    caller: Sidecar
    rule: str
    callee: Sidecar
    port: int  # the callee's pod port


class LocalMesh:
    """The sidecars and applications of the run's meshed pods (see the module docstring)."""

    def __init__(self, pods: list[EmulatedPod], pods_dir: Path, logs: Path, scratch: Path) -> None:
        self.logs, self.scratch = logs, scratch
        self.sidecars = [
            Sidecar(
                pod=p,
                tls=pods_dir / p.name / "contrast" / "tls-config",
                ingress=mc.parse_ingress(p.mesh.get(mc.INGRESS_ENV)),
                egress=mc.parse_egress(p.mesh.get(mc.EGRESS_ENV)),
            )
            for p in pods
            if p.mesh is not None
        ]
        self.apps: dict[str, App] = {}
        self.calls: list[Call] = []
        by_name = {s.pod.name: s for s in self.sidecars}
        for s in self.sidecars:
            if s.ingress.enabled:
                s.forwards = {port: free_port() for port in s.pod.ports}
            for rule in s.egress:
                s.local_egress[rule.name] = free_port()
        for s in self.sidecars:
            for rule in s.egress:
                callee = by_name.get(rule.remote_host.split(".")[0])
                if callee is not None and rule.remote_port in callee.forwards:
                    self.calls.append(Call(s, rule.name, callee, rule.remote_port))

    async def start(self) -> list[Child]:
        """Start the applications and the sidecars; returns the sidecar processes (not yet ready)."""
        for s in self.sidecars:
            if s.forwards:
                app = self.apps[s.pod.name] = App(s.pod.name)
                await app.start()
        resolve = ",".join(
            f"{_hostport(r.remote_host, r.remote_port)}=127.0.0.1:{c.callee.forwards[c.port]}"
            for c in self.calls
            for r in c.caller.egress
            if r.name == c.rule
        )
        children = []
        for s in self.sidecars:
            env = s.environment(self.apps.get(s.pod.name))
            env["CONTRAST_MESH_RESOLVE"] = resolve
            s.child = await spawn(
                s.label,
                [sys.executable, "-m", "contrast.meshproxy"],
                env=env,
                log_path=self.logs / f"{s.label}.log",
                metrics_port=s.admin_port,
            )
            children.append(s.child)
        return children

    @property
    def children(self) -> list[Child]:
        return [s.child for s in self.sidecars if s.child is not None]

    async def close(self) -> None:
        for app in self.apps.values():
            await app.close()

    async def _failures(self, sidecar: Sidecar) -> dict[str, float]:
        assert sidecar.child is not None
        return (await scrape(sidecar.child)).by_label(FAILURES, "reason")

    async def _refused_by(self, sidecar: Sidecar, before: dict[str, float]) -> str:
        after = await self._failures(sidecar)
        grown = [r for r, v in after.items() if v > before.get(r, 0)]
        return ", ".join(grown) or "no handshake failure counted"

    async def prove(self) -> mtls.Proof:
        exchanges: list[mtls.Exchange] = []
        for call in self.calls:
            exchanges += await self._prove_call(call)
        for s in self.sidecars:
            for rule in s.ingress.rules:
                if rule.mode is mc.PortMode.TLS and rule.port in s.forwards:
                    exchanges.append(await self._tls_without_certificate(s, rule.port))
        return mtls.Proof(exchanges)

    async def _prove_call(self, call: Call) -> list[mtls.Exchange]:
        caller, callee = call.caller.pod.name, call.callee.pod.name
        app = self.apps[callee]
        got = len(app.received)
        reply = await _plain_call(call.caller.local_egress[call.rule], REQUEST)
        request = REQUEST.decode().strip()
        ok = reply.startswith(f"hello from {callee}".encode()) and app.received[got:] == [request]
        out = [
            mtls.Exchange(
                f"{caller} app -> {caller} sidecar -> mutual TLS -> {callee} sidecar -> {callee} app "
                "(plain TCP)",
                "accepted",
                "accepted" if ok else "refused",
                f"{callee} app read {request!r} in plaintext" if ok else repr(reply[:200]),
            )
        ]
        port = call.callee.forwards[call.port]
        anchor = call.callee.tls / "mesh-ca.pem"
        unattested = mtls.write_unattested(self.scratch, caller, other_ca=False)
        before = await self._failures(call.callee)
        ok, detail = await asyncio.to_thread(mtls.call, mtls.client_context(unattested, anchor), port, callee)
        out.append(
            mtls.Exchange(
                f"unattested client (self-signed '{caller}') -> {callee} sidecar",
                "refused",
                "accepted" if ok else "refused",
                f"{callee} sidecar: {await self._refused_by(call.callee, before)}" if not ok else detail,
            )
        )
        before = await self._failures(call.callee)
        reply = await _plain_call(port, REQUEST)
        ok = reply.startswith(b"hello")
        out.append(
            mtls.Exchange(
                f"plaintext client -> {callee} sidecar",
                "refused",
                "accepted" if ok else "refused",
                f"{callee} sidecar: {await self._refused_by(call.callee, before)}" if not ok else repr(reply),
            )
        )
        if len(app.received) != got + 1:
            out.append(
                mtls.Exchange(f"{callee} app saw only the mesh call", "accepted", "refused", "it saw more")
            )
        return out

    async def _tls_without_certificate(self, s: Sidecar, pod_port: int) -> mtls.Exchange:
        ctx = mtls.client_context(None, s.tls / "mesh-ca.pem")
        ok, detail = await asyncio.to_thread(mtls.call, ctx, s.forwards[pod_port], s.pod.name)
        return mtls.Exchange(
            f"client without a mesh certificate -> {s.pod.name} sidecar, port {pod_port} (rule #false: TLS, "
            "no client certificate)",
            "accepted",
            "accepted" if ok else "refused",
            detail,
        )


async def _plain_call(port: int, payload: bytes) -> bytes:
    """One plaintext request; the answer up to its end (a reset ends it too)."""
    out = b""
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(payload)
                await writer.drain()
                while chunk := await reader.read(65536):
                    out += chunk
            finally:
                writer.close()
    return out
