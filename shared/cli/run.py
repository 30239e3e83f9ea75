"""``contrast run``: the local runner. Starts an embedded NATS (or uses ``--nats URL``) and every service that
exists so far, prints where everything listens, and stops everything cleanly on Ctrl-C.

Each service runs as its own process (``python -m contrast.<service>``), exactly as in a pod. Shutdown order:
services first (SIGTERM: they drain their in-flight work), then NATS. Children run in their own sessions, so a
Ctrl-C reaches only this runner, which then stops them in that order; nothing is left behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from contrast.runtime.natsserver import NatsServer, NatsServerNotFound, free_port, start_nats


@dataclass(frozen=True)
class RunnableService:
    """One row of the runner's table: a service module and how many replicas to start locally."""

    name: str
    replicas: int = 1
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    module_name: str = ""  # default: contrast.<name>

    @property
    def module(self) -> str:
        return self.module_name or f"contrast.{self.name}"

    def built(self) -> bool:
        """A service takes part once ``python -m <module>`` runs: a module, or a package with ``__main__``."""
        try:
            spec = importlib.util.find_spec(self.module)
            if spec is None:
                return False
            if spec.submodule_search_locations is None:
                return True
            return importlib.util.find_spec(f"{self.module}.__main__") is not None
        except ModuleNotFoundError:
            return False


# The services of the Coordinator and the local workload emulation. Extend this table (order = start order);
# rows whose module has no __main__ yet are reported as "not built yet" and skipped.
SERVICES: tuple[RunnableService, ...] = (
    RunnableService("manifest"),
    RunnableService("verifier", replicas=2),
    RunnableService("ca"),
    RunnableService("initializer"),
)

STOP_TIMEOUT = 35.0  # the services' own drain budget (30 s) plus margin
READY_TIMEOUT = 60.0


@dataclass
class _Child:
    label: str
    process: subprocess.Popen[bytes]
    metrics_port: int


def _start(service: RunnableService, replica: int, nats_url: str) -> _Child:
    label = f"{service.name}-{replica}"
    port = free_port()
    env = {**os.environ, **service.env, "CONTRAST_NATS_URL": nats_url}
    args = [
        sys.executable,
        "-m",
        service.module,
        "--replica",
        label,
        "--metrics-port",
        str(port),
        *service.args,
    ]
    process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    return _Child(label, process, port)


def _ready(child: _Child) -> bool:
    # Every service exports the readiness gauge; scraping it needs no NATS client in the runner.
    try:
        url = f"http://127.0.0.1:{child.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=1) as r:
            return b"\ncontrast_ready 1.0" in r.read()
    except OSError:
        return False


def _wait_ready(children: list[_Child], stopping: Callable[[], bool]) -> None:
    pending = list(children)
    deadline = time.monotonic() + READY_TIMEOUT
    while pending and not stopping() and time.monotonic() < deadline:
        pending = [c for c in pending if c.process.poll() is None and not _ready(c)]
        if pending:
            time.sleep(0.1)
    for c in pending:
        print(f"contrast run: {c.label} is not ready (yet)", file=sys.stderr, flush=True)


def _stop(children: list[_Child]) -> int:
    """SIGTERM every child, wait within the budget, SIGKILL stragglers. Returns the worst exit code."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    worst = 0
    for child in children:
        try:
            code = child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"contrast run: {child.label} did not stop in time; killing it", file=sys.stderr)
            child.process.kill()
            code = child.process.wait()
        if code == -signal.SIGTERM:
            code = (
                0  # stopped by our SIGTERM before it had installed its handler (still starting): no work lost
            )
        if code != 0:
            print(f"contrast run: {child.label} exited with {code}", file=sys.stderr)
        worst = max(worst, abs(code))
    return worst


def run(args: argparse.Namespace) -> int:
    stop_requested = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    server: NatsServer | None = None
    children: list[_Child] = []
    try:
        if args.nats:
            nats_url = args.nats
            print(f"NATS        {nats_url} (external)", flush=True)
        else:
            try:
                server = start_nats(store_dir=Path(args.store_dir) if args.store_dir else None)
            except NatsServerNotFound as e:
                print(f"contrast run: {e}", file=sys.stderr)
                return 2
            nats_url = server.url
            print(
                f"NATS        {nats_url}  (JetStream store {server.store_dir}, "
                f"monitoring http://127.0.0.1:{server.monitor_port}, pid {server.pid})",
                flush=True,
            )
        for service in SERVICES:
            if not service.built():
                print(f"{service.name:<11} not built yet (no {service.module}.__main__); skipped", flush=True)
                continue
            for replica in range(1, service.replicas + 1):
                child = _start(service, replica, nats_url)
                children.append(child)
                print(
                    f"{child.label:<11} pid {child.process.pid}, "
                    f"metrics http://127.0.0.1:{child.metrics_port}/metrics",
                    flush=True,
                )
        _wait_ready(children, lambda: stop_requested)
        print("contrast run: ready; press Ctrl-C to stop", flush=True)
        exit_code = 0
        while not stop_requested:
            failed = [c for c in children if c.process.poll() is not None]
            if failed:
                for c in failed:
                    print(
                        f"contrast run: {c.label} exited with {c.process.returncode}; stopping",
                        file=sys.stderr,
                    )
                exit_code = 1
                break
            if server is not None and not server.running():
                print("contrast run: nats-server exited; stopping", file=sys.stderr)
                exit_code = 1
                break
            time.sleep(0.2)
        print("contrast run: stopping services", flush=True)
        worst = _stop(children)
        return exit_code or (1 if worst else 0)
    finally:
        if children:
            _stop(children)
        if server is not None:
            server.cleanup()
            print("contrast run: NATS stopped", flush=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="start NATS and every service locally",
        description="Start an embedded NATS (JetStream) and every service built so far; Ctrl-C stops all.",
    )
    p.add_argument("--nats", help="use this NATS server instead of starting an embedded one")
    p.add_argument("--store-dir", help="JetStream store directory of the embedded NATS (default: a temp dir)")
    p.set_defaults(func=run)
