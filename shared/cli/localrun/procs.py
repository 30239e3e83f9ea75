"""Child processes of the local runner: services and emulated pods, each in its own session.

Every child runs in a new session, so a Ctrl-C in the terminal reaches only the runner, which then stops the
children in order (SIGTERM: services drain their in-flight work; SIGKILL only after the budget). Nothing is
left behind: :func:`stop_children` waits for every child it signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from contrast.runtime.natsserver import free_port

STOP_TIMEOUT = 35.0  # the services' own drain budget (30 s) plus margin


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


@dataclass(eq=False)  # identity semantics: children go into sets
class Child:
    label: str
    process: asyncio.subprocess.Process
    metrics_port: int | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, limit: int = 1500) -> str:
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


async def spawn(
    label: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path | None = None,
    metrics_port: int | None = None,
) -> Child:
    """Start ``argv`` in its own session; stdout and stderr go to ``log_path`` (inherited when None)."""
    log = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        if log is not None:
            log.close()  # the child holds its own descriptor
    return Child(label, process, metrics_port, log_path)


async def start_service(
    service: RunnableService,
    replica: int,
    nats_url: str,
    *,
    extra_env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> Child:
    label = f"{service.name}-{replica}"
    env = {**os.environ, **(extra_env or {}), **service.env, "CONTRAST_NATS_URL": nats_url}
    argv = [sys.executable, "-m", service.module, *service.args]
    return await start_process(label, argv, env, log_dir)


async def start_process(
    label: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path | None
) -> Child:
    """A long-running service process named ``label``, with its own metrics port (``CONTRAST_REPLICA`` and
    ``CONTRAST_METRICS_PORT`` are set here, on a loopback address)."""
    port = free_port()
    full = {
        **env,
        "CONTRAST_REPLICA": label,
        "CONTRAST_METRICS_PORT": str(port),
        "CONTRAST_METRICS_ADDR": "127.0.0.1",
    }
    log_path = log_dir / f"{label}.log" if log_dir is not None else None
    return await spawn(label, argv, env=full, log_path=log_path, metrics_port=port)


def _get(port: int, path: str) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return None


async def http_get(port: int, path: str) -> tuple[int, bytes] | None:
    """GET on a child's metrics port (off the event loop); None if nothing answers."""
    return await asyncio.to_thread(_get, port, path)


async def is_ready(child: Child) -> bool:
    # /readyz answers 200 only while the replica can do its job (joined, manifest loaded).
    if child.metrics_port is None:
        return False
    answer = await http_get(child.metrics_port, "/readyz")
    return answer is not None and answer[0] == 200


async def is_live(child: Child) -> bool:
    if child.metrics_port is None:
        return False
    answer = await http_get(child.metrics_port, "/livez")
    return answer is not None and answer[0] == 200


async def wait_until(children: Sequence[Child], probe: str, timeout: float) -> list[Child]:
    """Poll ``/readyz`` (probe "ready") or ``/livez`` (probe "live") until every child passes; returns the
    children that did not pass in time (including those that exited)."""
    check = is_ready if probe == "ready" else is_live
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = list(children)
    while pending and loop.time() < deadline:
        results = await asyncio.gather(*(check(c) for c in pending))
        pending = [c for c, ok in zip(pending, results, strict=True) if not ok and c.running()]
        if any(not c.running() for c in children):
            break
        if pending:
            await asyncio.sleep(0.1)
    return [c for c in children if not c.running()] + pending


async def stop_children(children: Sequence[Child], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM every running child, wait within the budget, SIGKILL stragglers; returns the worst exit."""
    for child in children:
        if child.running():
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    worst = 0
    for child in children:
        try:
            code = await asyncio.wait_for(child.process.wait(), max(0.1, deadline - loop.time()))
        except TimeoutError:
            print(f"contrast run: {child.label} did not stop in time; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            code = await child.process.wait()
        if code == -signal.SIGTERM:
            code = (
                0  # stopped by our SIGTERM before it had installed its handler (still starting): no work lost
            )
        if code != 0:
            print(f"contrast run: {child.label} exited with {code}", file=sys.stderr)
        worst = max(worst, abs(code))
    return worst
