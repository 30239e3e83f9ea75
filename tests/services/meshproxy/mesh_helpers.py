"""Helpers of the sidecar tests: a plain-TCP application that records what reaches it, and sidecars served
in the test's event loop (``--redirect none``: ingress through forwards, as in a local run).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from contrast.cli.localrun.mtls import LoopbackServer
from contrast.mesh.config import MeshConfig, parse
from contrast.meshproxy.proxy import Forward
from contrast.meshproxy.service import Redirect, RunningSidecar, SidecarConfig, serve
from contrast.runtime.metrics import Metrics
from contrast.runtime.natsserver import free_port
from contrast.testing.mesh import Generation

IO_TIMEOUT = 10.0


@dataclass
class Seen:
    data: bytes
    ended: str  # "eof" (a clean end of stream) or "reset"


@dataclass
class App(LoopbackServer):
    """A plain-TCP application: reads up to a newline or the end of the stream, answers ``app:<data>``."""

    seen: list[Seen] = field(default_factory=list)
    done: threading.Condition = field(default_factory=threading.Condition)

    def handle(self, conn: socket.socket) -> None:
        threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        data, ended = b"", "eof"
        with conn:
            conn.settimeout(IO_TIMEOUT)
            try:
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(b"app:" + data)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):  # until the other side ends too: how it ends is recorded
                    pass
            except OSError:
                ended = "reset"
        with self.done:
            self.seen.append(Seen(data, ended))
            self.done.notify_all()

    def wait_for(self, count: int, timeout: float = IO_TIMEOUT) -> list[Seen]:
        with self.done:
            self.done.wait_for(lambda: len(self.seen) >= count, timeout)
            return list(self.seen)


def mesh(ingress: str | None = None, egress: str | None = None, verify_san: str | None = None) -> MeshConfig:
    return parse(ingress, egress, None, verify_san)


@contextlib.asynccontextmanager
async def ingress_sidecar(
    tls: Path,
    app_port: int,
    *,
    ingress: str | None = "",
    pod_port: int = 8443,
    metrics: Metrics | None = None,
    reload_interval: float = 2.0,
) -> AsyncIterator[tuple[RunningSidecar, int]]:
    """A sidecar serving ``pod_port`` (forwarded to the app); yields it and its listening port."""
    config = SidecarConfig(
        mesh=mesh(ingress),
        tls_dir=tls,
        redirect=Redirect.NONE,
        forwards=(Forward(pod_port, ("127.0.0.1", 0), ("127.0.0.1", app_port)),),
        reload_interval=reload_interval,
    )
    async with serve(config, metrics or Metrics()) as running:
        yield running, running.ingress[f"port-{pod_port}"][1]


@contextlib.asynccontextmanager
async def egress_sidecar(
    tls: Path,
    remote: str,
    address: tuple[str, int],
    *,
    verify_san: str | None = None,
    metrics: Metrics | None = None,
    reload_interval: float = 2.0,
) -> AsyncIterator[tuple[RunningSidecar, int]]:
    """A sidecar with one egress rule to ``remote`` (reached at ``address``); yields it and its local port."""
    listen = free_port()
    config = SidecarConfig(
        mesh=mesh(egress=f"remote#127.0.0.1:{listen}#{remote}", verify_san=verify_san),
        tls_dir=tls,
        redirect=Redirect.NONE,
        resolve={_split(remote): address},
        reload_interval=reload_interval,
    )
    async with serve(config, metrics or Metrics()) as running:
        yield running, listen


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def plain_call(port: int, payload: bytes, *, half_close: bool = False) -> bytes:
    """Send ``payload`` in plaintext (then half-close if asked) and read the answer to its end.

    A refusal ends the connection with a reset, which may arrive at any step (even before ``connect``
    has returned, when the refusal is that quick): the answer is what came before it.
    """
    out = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
            s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                out += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return out


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def until(condition: Callable[[], bool], timeout: float = IO_TIMEOUT) -> None:
    """Poll ``condition`` (state that no event announces, such as a file reload) until it holds."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def wait_for_generation(running: RunningSidecar, generation: Generation) -> None:
    """Until the sidecar has loaded ``generation``'s mesh CA."""
    want = hashlib.sha256(generation.authority.mesh_ca.public_bytes(serialization.Encoding.DER)).hexdigest()
    await until(lambda: running.store.get().mesh_ca_sha256 == want)
