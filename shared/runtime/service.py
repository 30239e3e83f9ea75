"""Service definition and lifecycle: connect, build, serve, and shut down in order.

Lifecycle (every resource in one ``AsyncExitStack``, set up in order, torn down in reverse):

1. connect to NATS (jittered reconnect), open JetStream, start the metrics server if asked;
2. ``await service.build(runtime)`` wires the service's own resources (KV buckets, keys, roots) and returns
   its :class:`Handlers`; it may push cleanups onto ``runtime.stack``;
3. subscribe the endpoints (queue groups) and the readiness endpoint, start the stream workers, then answer
   ``$SRV.PING/INFO/STATS``;
4. on stop (SIGTERM/SIGINT in :func:`main`): report not-ready, stop intake and drain accepted requests, stop
   the workers (finish and ack in-flight messages), leave discovery, close the service's resources, drain the
   connection, flush spans. Exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.micro.service import EndpointInfo, EndpointStats
from nats.nuid import NUID
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from contrast import subjects
from contrast.errors import ContrastError
from contrast.runtime.config import RuntimeConfig, add_runtime_arguments, config_from_args
from contrast.runtime.connection import connect
from contrast.runtime.discovery import Discovery, check_semver
from contrast.runtime.endpoint import Endpoint, EndpointServer, RequestContext
from contrast.runtime.jetstream import ensure_kv, ensure_stream
from contrast.runtime.logs import configure_logging, get_logger
from contrast.runtime.metrics import Metrics
from contrast.runtime.process import start_metrics_server, stop_signals
from contrast.runtime.tracing import build_tracer_provider, use_tracer
from contrast.runtime.worker import StreamWorker, WorkerRunner
from contrast.subjects import KVSpec, StreamSpec
from contrast.wire.v1 import ReadinessCheck, ReadinessReply, ReadinessRequest

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
READY_CHECK_TIMEOUT = 2.0
READY_REFRESH = 2.0

_log = get_logger(__name__)

ReadyCheck = Callable[[], Awaitable[None]]
"""A readiness condition: returns when satisfied, raises (ideally ``StateError``) with the reason if not."""


@dataclass(frozen=True, kw_only=True)
class Handlers:
    """What a built service serves."""

    endpoints: tuple[Endpoint[Any], ...] = ()
    workers: tuple[StreamWorker[Any], ...] = ()
    ready_checks: Mapping[str, ReadyCheck] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [e.name for e in self.endpoints] + [w.name for w in self.workers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate endpoint/worker names: {names}")
        subjects_ = [e.subject for e in self.endpoints]
        if len(set(subjects_)) != len(subjects_):
            raise ValueError(f"duplicate endpoint subjects: {subjects_}")


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """The dependencies handed to ``Service.build``. Resources the service opens go on ``stack``."""

    service: str
    version: str
    replica: str
    config: RuntimeConfig
    nc: Client
    js: JetStreamContext
    metrics: Metrics
    tracer: Tracer
    stack: AsyncExitStack

    async def kv(self, spec: KVSpec) -> KeyValue:
        """Create-or-bind a KV bucket declared in :mod:`contrast.subjects`."""
        return await ensure_kv(self.js, spec, replicas=self.config.js_replicas)

    async def stream(self, spec: StreamSpec) -> None:
        """Create-or-update a stream declared in :mod:`contrast.subjects` (e.g. one it publishes to)."""
        await ensure_stream(self.js, spec, replicas=self.config.js_replicas)


@dataclass(frozen=True, kw_only=True)
class Service:
    """A service definition: identity (``$SRV`` name, semver version) and how to build its handlers."""

    name: str
    version: str
    build: Callable[[Runtime], Awaitable[Handlers]]
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid service name {self.name!r}")
        check_semver(self.version)


class RunningService:
    """Handle on a served replica (from :func:`serve`)."""

    def __init__(
        self,
        service: Service,
        runtime: Runtime,
        handlers: Handlers,
        endpoints: EndpointServer,
        workers: list[WorkerRunner],
        discovery: Discovery,
        metrics_port: int | None,
    ) -> None:
        self.service, self.runtime, self.handlers = service, runtime, handlers
        self.endpoints, self.workers, self.discovery = endpoints, workers, discovery
        self.metrics_port = metrics_port
        self.stopping = asyncio.Event()

    @property
    def replica(self) -> str:
        return self.runtime.replica

    @property
    def instance_id(self) -> str:
        return self.discovery.id

    def stop(self) -> None:
        """Ask the replica to shut down gracefully (idempotent; safe from a signal handler)."""
        self.stopping.set()

    async def wait(self) -> None:
        await self.stopping.wait()

    async def readiness(self) -> ReadinessReply:
        checks = [
            ReadinessCheck(name="nats_connected", ok=self.runtime.nc.is_connected),
            ReadinessCheck(name="subscribed", ok=self.endpoints.subscribed and not self.stopping.is_set()),
            ReadinessCheck(name="workers_running", ok=all(w.running for w in self.workers)),
        ]
        for name, check in self.handlers.ready_checks.items():
            try:
                async with asyncio.timeout(READY_CHECK_TIMEOUT):
                    await check()
                checks.append(ReadinessCheck(name=name, ok=True))
            except ContrastError as e:
                checks.append(ReadinessCheck(name=name, ok=False, detail=f"{e.code}: {e.message}"[:1024]))
            except TimeoutError:
                checks.append(ReadinessCheck(name=name, ok=False, detail="check timed out"))
            except Exception as e:
                _log.warning("ready_check_failed", check=name, error=type(e).__name__)
                checks.append(ReadinessCheck(name=name, ok=False, detail=type(e).__name__))
        ready = all(c.ok for c in checks)
        self.runtime.metrics.ready.set(1 if ready else 0)
        return ReadinessReply(
            service=self.service.name,
            replica=self.replica,
            version=self.service.version,
            ready=ready,
            checks=checks,
        )


def _endpoint_table(server: EndpointServer) -> list[tuple[EndpointInfo, EndpointStats]]:
    rows = []
    for ep in server.endpoints:
        s = server.stats[ep.name]
        avg = s.processing_ns // s.num_requests if s.num_requests else 0
        rows.append(
            (
                EndpointInfo(
                    name=ep.name, subject=ep.subject, queue_group=ep.queue_group, metadata=dict(ep.metadata)
                ),
                EndpointStats(
                    name=ep.name,
                    subject=ep.subject,
                    queue_group=ep.queue_group,
                    num_requests=s.num_requests,
                    num_errors=s.num_errors,
                    processing_time=s.processing_ns,
                    average_processing_time=avg,
                    last_error=s.last_error,
                ),
            )
        )
    return rows


@contextlib.asynccontextmanager
async def serve(
    service: Service, config: RuntimeConfig, *, tracer_provider: TracerProvider | None = None
) -> AsyncIterator[RunningService]:
    """Run ``service`` until the block exits; exiting performs the graceful shutdown described above.

    ``tracer_provider``: tests pass one with an in-memory exporter; by default one is built from ``OTEL_*``
    and shut down (flushed) at exit.
    """
    replica = config.replica_id
    log = _log.bind(service=service.name, replica=replica)
    own_provider = tracer_provider is None
    provider = tracer_provider or build_tracer_provider(service.name, replica, service.version)
    metrics = Metrics()
    metrics.service_info.labels(service.name, replica, service.version).set(1)
    async with AsyncExitStack() as stack:
        if own_provider:
            stack.callback(provider.shutdown)
        metrics_port = await start_metrics_server(stack, metrics, config.metrics_port, config.metrics_addr)
        nc = await connect(config.nats_urls, name=f"{service.name}/{replica}", credentials=config.credentials)
        stack.push_async_callback(_close_connection, nc)
        # The service's own resources are closed after intake has stopped and before the connection drains.
        service_stack = await stack.enter_async_context(AsyncExitStack())
        runtime = Runtime(
            service=service.name,
            version=service.version,
            replica=replica,
            config=config,
            nc=nc,
            js=nc.jetstream(),
            metrics=metrics,
            tracer=provider.get_tracer("contrast.runtime"),
            stack=service_stack,
        )
        # Everything the service starts (background joins, subscriptions, their handler tasks) traces with
        # this service's tracer: tasks inherit the context they are created in.
        with use_tracer(runtime.tracer):
            running = _assemble(service, runtime, await service.build(runtime), metrics_port)
        try:
            with use_tracer(runtime.tracer):
                await running.endpoints.start()
                for runner in running.workers:
                    await runner.start()
                await running.discovery.start()
                refresher = asyncio.create_task(_refresh_readiness(running), name="readiness")
            log.info(
                "service_started",
                version=service.version,
                nats_server=nc.connected_url.netloc if nc.connected_url else "",
                metrics_port=metrics_port,
                endpoints=[e.subject for e in running.endpoints.endpoints],
                workers=[w.name for w in running.handlers.workers],
                instance_id=running.discovery.id,
            )
            try:
                yield running
            finally:
                refresher.cancel()
                await _shutdown(running, config.shutdown_timeout, log)
        finally:
            metrics.ready.set(0)


def _assemble(
    service: Service, runtime: Runtime, handlers: Handlers, metrics_port: int | None
) -> RunningService:
    """Wire the built handlers to NATS: the endpoint server (with the readiness endpoint), one worker runner
    per stream worker, and ``$SRV`` discovery. Nothing is subscribed yet."""
    holder: list[RunningService] = []

    async def readiness(_: ReadinessRequest, __: RequestContext) -> ReadinessReply:
        return await holder[0].readiness()

    health = Endpoint(
        name="ready",
        subject=subjects.health(service.name),
        request_type=ReadinessRequest,
        handler=readiness,
        max_bytes=64,
        timeout=READY_CHECK_TIMEOUT * 2,
    )
    config = runtime.config
    server = EndpointServer(
        nc=runtime.nc,
        js=runtime.js,
        endpoints=(*handlers.endpoints, health),
        service=service.name,
        replica=runtime.replica,
        tracer=runtime.tracer,
        metrics=runtime.metrics,
        max_concurrency=config.max_concurrency,
        max_pending=config.max_pending,
    )
    runners = [
        WorkerRunner(
            w,
            nc=runtime.nc,
            js=runtime.js,
            service=service.name,
            replica=runtime.replica,
            tracer=runtime.tracer,
            metrics=runtime.metrics,
            js_replicas=config.js_replicas,
        )
        for w in handlers.workers
    ]
    metadata = {**service.metadata, "replica": runtime.replica}
    if handlers.workers:
        metadata["workers"] = ",".join(
            f"{w.consumer.stream.name}/{w.consumer.durable}" for w in handlers.workers
        )
    discovery = Discovery(
        runtime.nc,
        name=service.name,
        instance_id=NUID().next().decode(),
        version=service.version,
        description=service.description,
        metadata=metadata,
        endpoints=lambda: _endpoint_table(server),
    )
    running = RunningService(service, runtime, handlers, server, runners, discovery, metrics_port)
    holder.append(running)
    return running


async def _refresh_readiness(running: RunningService) -> None:
    while True:
        await running.readiness()
        await asyncio.sleep(READY_REFRESH)


async def _shutdown(running: RunningService, budget: float, log: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    running.stopping.set()
    running.runtime.metrics.ready.set(0)
    log.info("service_stopping", in_flight=len(running.endpoints._tasks))
    drained = await running.endpoints.drain(max(0.1, deadline - loop.time()))
    for runner in running.workers:
        drained = await runner.stop(max(0.1, deadline - loop.time())) and drained
    await running.discovery.stop()
    log.info("service_stopped", drained=drained)


async def _close_connection(nc: Client) -> None:
    if nc.is_closed:
        return
    try:
        await nc.drain()  # flushes our last replies and acks before closing
    except Exception:
        with contextlib.suppress(Exception):
            await nc.close()


async def run_service(service: Service, config: RuntimeConfig) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. Returns the process exit code (0).

    The signal handlers are installed before startup, so a SIGTERM that arrives while the replica is still
    connecting lets startup finish and then shuts down in order (instead of killing the process).
    """
    async with stop_signals() as stop, serve(service, config) as running:
        await stop.wait()
        running.stop()
    return 0


def build_parser(service: Service, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or f"python -m contrast.{service.name}",
        description=service.description or f"Contrast {service.name} service",
    )
    add_runtime_arguments(parser)
    return parser


def main(
    service: Service | Callable[[], Service], argv: Sequence[str] | None = None, *, prog: str | None = None
) -> int:
    """Entry point of ``python -m contrast.<service>``: parse the common flags/env, log JSON, serve.

    ``service`` may be a factory that reads its own configuration from the environment: a ``ValueError`` it
    raises is a configuration error (exit 2, printed), never a service started half configured.
    """
    if not isinstance(service, Service):
        try:
            service = service()
        except ValueError as e:
            print(f"{prog or sys.argv[0]}: configuration error: {e}", file=sys.stderr)
            return 2
    parser = build_parser(service, prog)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    configure_logging(service.name, config.replica_id, level=config.log_level)
    try:
        return asyncio.run(run_service(service, config))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    except (OSError, NatsError) as e:
        get_logger(__name__).error("service_failed", error=type(e).__name__, detail=str(e)[:300])
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run a service with: python -m contrast.<service>")
