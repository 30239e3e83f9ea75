"""Process supervision for the local runner: NATS, the services, the short-lived pods and CLI calls, and
with ``--jaeger`` a local Jaeger that every one of them exports its spans to.

The embedded NATS (one server, or with ``--nats-cluster N`` a cluster of N with every stream and bucket at
R3) has the least-privilege users of :mod:`contrast.runtime.natsauth`: each child connects as its role's
user (:meth:`Supervisor.nats_env`), a pod as its namespace's initializer user, the owner's CLI calls as the
owner, the runner's own status connection as the monitor. Replicas are spread over the nodes: each gets every
URL, its own node first.

Every wait of the run goes through :meth:`Supervisor.guard`, so that Ctrl-C (:class:`Interrupted`) or a
service that dies (:class:`StepFailed`) ends it at once instead of after a timeout.
:meth:`Supervisor.shutdown` stops whatever this run started: pods and CLI calls first, then the services in
order (the mesh's sidecars with them), then the in-process servers registered with
:meth:`Supervisor.on_shutdown`, then NATS, then Jaeger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
from nats.aio.client import Client

from contrast import subjects
from contrast.cli.exitcodes import EXIT_OK, EXIT_REJECTED
from contrast.cli.localrun import jaeger
from contrast.cli.localrun.console import Console
from contrast.cli.localrun.procs import Child, RunnableService, start_process, start_service, stop_children
from contrast.coordinator.history import LATEST_KEY
from contrast.runtime.connection import NatsCredentials, client_options
from contrast.runtime.natsauth import ROLES, role_users, server_config
from contrast.runtime.natsserver import NatsServer, start_cluster, start_nats, stop_cluster

T = TypeVar("T")


class Interrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM arrived."""


class StepFailed(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


async def _awaited(aw: Awaitable[None]) -> None:
    await aw


class Supervisor:
    """The processes of one run and the runner's own NATS connection."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.stop = asyncio.Event()
        self.children: list[Child] = []  # long-running services, in start order
        self.transient: set[Child] = set()  # pods and CLI calls in flight
        self.nats: NatsServer | None = None  # the embedded server, or the first node of the cluster
        self.nats_nodes: list[NatsServer] = []
        self.nats_url = ""  # one URL (the CLI's), every node's comes from nats_env
        self.credentials: dict[str, NatsCredentials] = {}  # by NATS user; empty for an external NATS
        self.js_replicas = 1
        self.sources: tuple[str, ...] = ()  # the initializer users besides the default one (embedded NATS)
        self._cluster_root: Path | None = None
        self.nc: Client | None = None
        self.jaeger: jaeger.Jaeger | None = None
        self.telemetry: dict[str, str] = {}  # OTEL_* for every child while this run has its own Jaeger
        self.closers: list[Callable[[], Awaitable[None]]] = []  # in-process servers, closed at shutdown

    def on_shutdown(self, close: Callable[[], Awaitable[None]]) -> None:
        """Have :meth:`shutdown` await ``close()`` once the processes are stopped."""
        self.closers.append(close)

    async def guard(self, aw: Awaitable[T], timeout: float | None = None) -> T:
        """Await ``aw`` unless a stop is requested (:class:`Interrupted`) or a service dies
        (:class:`StepFailed`) first; ``TimeoutError`` after ``timeout``."""
        task = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self.stop.wait())
        died = asyncio.ensure_future(self._a_service_died())
        try:
            done, _ = await asyncio.wait(
                {task, stopper, died}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
            died.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if self.stop.is_set():
            raise Interrupted
        if died in done:
            dead = died.result()
            raise StepFailed(
                "services", f"{dead.label} exited with {dead.process.returncode}: {dead.log_tail(800)}"
            )
        raise TimeoutError

    async def _a_service_died(self) -> Child:
        while True:
            for c in self.children:
                if not c.running():
                    return c
            await asyncio.sleep(0.2)

    async def together(self, *aws: Awaitable[None]) -> None:
        """Run steps concurrently; the first failure cancels the others and is raised as itself."""
        try:
            async with asyncio.TaskGroup() as tg:
                for aw in aws:
                    tg.create_task(_awaited(aw))
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None

    # ---- NATS and the services ----------------------------------------------------------------------------

    async def start_nats(
        self, url: str | None, store_dir: Path | None, *, nodes: int = 1, sources: Sequence[str] = ()
    ) -> None:
        """Use the NATS at ``url``, or start an embedded one (JetStream in ``store_dir`` if given): one
        server, or a cluster of ``nodes``, with one user per role and an initializer user per source."""
        say = self.console.say
        if url:
            self.nats_url = url
            say(f"NATS        {self.nats_url} (external)")
            return
        self.sources = tuple(sources)
        names = [r for r in ROLES if r != "initializer"] + [subjects.DEFAULT_SOURCE, *sources]
        passwords = {n: secrets.token_urlsafe(18) for n in names}
        authorization = server_config(role_users(passwords, sources=sources))
        self.credentials = {n: NatsCredentials(n, p) for n, p in passwords.items()}
        if store_dir is not None:
            await asyncio.to_thread(store_dir.mkdir, parents=True, exist_ok=True)
        if nodes > 1:
            self._cluster_root = None if store_dir else Path(tempfile.mkdtemp(prefix="contrast-run-nats-"))
            root = store_dir or self._cluster_root
            self.nats_nodes = await asyncio.to_thread(
                start_cluster, nodes, root=root, authorization=authorization
            )
            self.js_replicas = 3 if nodes >= 3 else 1
        else:
            self.nats_nodes = [
                await asyncio.to_thread(start_nats, store_dir=store_dir, authorization=authorization)
            ]
        self.nats = self.nats_nodes[0]
        self.nats_url = self.nats.url
        for n in self.nats_nodes:
            say(
                f"NATS        {n.url}  (JetStream store {n.store_dir}, "
                f"monitoring http://127.0.0.1:{n.monitor_port}, pid {n.pid})"
            )
        if nodes > 1:
            say(f"{'':12}one cluster of {nodes} nodes; streams and buckets have {self.js_replicas} replicas")
        say(f"{'':12}users: one per role, initializers per namespace ({', '.join(sources) or 'none'})")

    def nats_urls(self, index: int = 0) -> list[str]:
        """Every node's URL, node ``index`` mod N first (an external NATS: its URL)."""
        urls = [n.url for n in self.nats_nodes] or [self.nats_url]
        k = index % len(urls)
        return urls[k:] + urls[:k]

    def nats_env(self, user: str, index: int = 0) -> dict[str, str]:
        """The environment of a child that connects as ``user`` (a role or an initializer's namespace), on
        node ``index`` first."""
        env = {"CONTRAST_NATS_URL": ",".join(self.nats_urls(index))}
        creds = self.credentials.get(user)
        if creds is None and self.credentials:  # a namespace without a user of its own
            creds = self.credentials[subjects.DEFAULT_SOURCE]
        if creds is not None:
            env.update(creds.env())
        if self.js_replicas > 1:
            env["CONTRAST_JS_REPLICAS"] = str(self.js_replicas)
        if user == "verifier" and self.sources:  # it pulls each initializer user's nonce stream
            env["CONTRAST_SOURCES"] = ",".join(self.sources)
        return env

    async def start_jaeger(self, workdir: Path) -> jaeger.Jaeger:
        """Start the Jaeger of ``make tools`` on loopback (config and log in ``workdir``); from now on every
        child this run starts exports its spans to it."""
        binary = jaeger.find_jaeger()
        if binary is None:
            raise StepFailed(
                "jaeger", "no Jaeger binary: build it with `make tools` (needs go), or set CONTRAST_JAEGER"
            )
        # The UI on Jaeger's usual port when it is free, so that a bookmark keeps working.
        ui_port = jaeger.DEFAULT_UI_PORT if jaeger.port_is_free(jaeger.DEFAULT_UI_PORT) else None
        try:
            j = await asyncio.to_thread(jaeger.start, binary, workdir, query_http=ui_port)
        except (OSError, RuntimeError) as e:
            raise StepFailed("jaeger", str(e)) from e
        self.jaeger = j
        # Spans leave each process within half a second (the SDK's default waits 5 s).
        self.telemetry = {"OTEL_EXPORTER_OTLP_ENDPOINT": j.otlp_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "500"}
        return j

    async def connect(self) -> None:
        """The runner's own client (status line: queue depth); also fails fast on an unreachable --nats."""
        try:
            self.nc = await self.guard(
                nats.connect(
                    self.nats_urls(),
                    name="contrast-run",
                    connect_timeout=5,
                    allow_reconnect=True,
                    **client_options(self.credentials.get("monitor")),
                ),
                timeout=20,
            )
        except (TimeoutError, OSError, nats.errors.Error) as e:
            raise StepFailed("nats", f"cannot reach NATS at {self.nats_url}: {type(e).__name__}") from e

    async def start(
        self, service: RunnableService, replicas: int, env: dict[str, str], logs: Path | None
    ) -> None:
        for replica in range(1, replicas + 1):
            nats_env = self.nats_env(service.name, len(self.children))  # spread over the nodes
            child = await start_service(
                service,
                replica,
                nats_env["CONTRAST_NATS_URL"],
                extra_env={**env, **nats_env},
                log_dir=logs,
            )
            self._started(child)

    async def start_processes(
        self,
        name: str,
        launch: Callable[[int], tuple[list[str], dict[str, str]]],
        replicas: int,
        logs: Path | None,
    ) -> None:
        """``replicas`` processes ``<name>-<i>`` of one pod's service, each started with ``launch(node)``:
        ``node`` is the NATS node it connects to first, so that replicas spread over the nodes."""
        for replica in range(1, replicas + 1):
            argv, env = launch(len(self.children))
            self._started(await start_process(f"{name}-{replica}", argv, env, logs))

    def _started(self, child: Child) -> None:
        self.children.append(child)
        self.console.say(
            f"{child.label:<11} pid {child.pid}, metrics http://127.0.0.1:{child.metrics_port}/metrics"
            + (f", log {child.log_path}" if child.log_path else "")
        )

    async def history_exists(self) -> bool:
        """A hint from the (untrusted) store only: it picks recover-then-update over a first set; the CLIs
        do the authenticated checks either way."""
        if self.nc is None:
            return False
        try:
            kv = await self.nc.jetstream().key_value(subjects.HISTORY.bucket)
            await kv.get(LATEST_KEY)
        except Exception:  # no bucket or no key: a fresh deployment
            return False
        return True

    async def queue_depth(self) -> str:
        """The verifier queues (pending and unacknowledged requests, every source's), or ``?`` while NATS is
        busy."""
        if self.nc is None:
            return "?"
        js = self.nc.jetstream()
        waiting = 0
        try:
            for source in subjects.parse_sources(",".join(self.sources)):
                consumer = subjects.verifier_consumer(source)
                info = await js.consumer_info(consumer.stream.name, consumer.durable, timeout=0.5)
                waiting += info.num_pending + info.num_ack_pending
        except Exception:  # NATS busy or restarting: show "?" rather than stall the line
            return "?"
        return str(waiting)

    # ---- short-lived processes ----------------------------------------------------------------------------

    async def run_child(self, child: Child) -> int:
        """Wait for a pod's initializer (tracked, so that a stop kills it); returns its exit code."""
        self.transient.add(child)
        code = await child.process.wait()
        self.transient.discard(child)
        return code

    async def cli(self, label: str, args: list[str], logs: Path, timeout: float = 60.0) -> dict[str, Any]:
        """Run ``contrast <args> --json`` as the data owner would; returns its JSON answer."""
        argv = [sys.executable, "-m", "contrast.cli.main", *args, "--json"]
        await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
        log = logs / f"{label}.log"
        owner = self.credentials["owner"].env() if self.credentials else {}
        with log.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env={**os.environ, **self.telemetry, **owner},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        child = Child(label, process, None, log)
        self.transient.add(child)
        try:
            stdout, _ = await self.guard(process.communicate(), timeout)
        except TimeoutError:
            raise StepFailed(label, f"no answer within {timeout:g} s; see {log}") from None
        finally:
            if process.returncode is not None:
                self.transient.discard(child)
        try:
            answer: dict[str, Any] = json.loads(stdout)
        except ValueError:
            raise StepFailed(
                label, f"exit {process.returncode}, no JSON answer: {stdout[:300]!r}; {child.log_tail(600)}"
            ) from None
        if process.returncode != 0 or answer.get("ok") is not True:
            reason = answer.get("code", "?")
            raise StepFailed(label, f"exit {process.returncode}: {reason}: {answer.get('message', '')}")
        return answer

    # ---- staying up, and stopping -------------------------------------------------------------------------

    async def watch(self, status: Callable[[], Awaitable[str]] | None, interval: float) -> int:
        """Stay up until Ctrl-C (exit 0) or until a service or NATS dies (exit 1), refreshing ``status``."""
        console = self.console
        last_line = 0.0
        while not self.stop.is_set():
            failed = [c for c in self.children if not c.running()]
            if failed:
                for c in failed:
                    console.say(f"\ncontrast run: {c.label} exited with {c.process.returncode}; stopping")
                    if c.log_path:
                        console.say(c.log_tail())
                return EXIT_REJECTED
            if self.nats_nodes and not any(n.running() for n in self.nats_nodes):
                console.say("\ncontrast run: nats-server exited; stopping")
                return EXIT_REJECTED
            if status is not None:
                line = await status()
                if console.is_terminal:
                    console.overwrite(line)
                elif time.monotonic() - last_line > 30:
                    console.say(line)
                    last_line = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), interval)
        if status is not None and console.is_terminal:
            console.say()
        return EXIT_OK

    async def shutdown(self) -> None:
        for child in list(self.transient):
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            await child.process.wait()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        if self.children:
            self.console.say("contrast run: stopping services")
            await stop_children(self.children)
        for close in reversed(self.closers):
            await close()
        if len(self.nats_nodes) > 1:
            await asyncio.to_thread(stop_cluster, self.nats_nodes)
            if self._cluster_root is not None:
                await asyncio.to_thread(shutil.rmtree, self._cluster_root, True)
            self.console.say("contrast run: NATS cluster stopped")
        elif self.nats is not None:
            await asyncio.to_thread(self.nats.cleanup)
            self.console.say("contrast run: NATS stopped")
        if self.jaeger is not None:
            await asyncio.to_thread(self.jaeger.stop)
            self.console.say("contrast run: Jaeger stopped")
