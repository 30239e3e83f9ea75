"""The service runtime every Contrast service is built on (NATS request/reply + JetStream work queues).

API summary
===========

Define a service (``services/<svc>/__main__.py``)::

    from contrast import subjects
    from contrast.runtime import Endpoint, Handlers, RequestContext, Runtime, Service, StreamWorker, main
    from contrast.wire.v1 import ...

    async def build(rt: Runtime) -> Handlers:          # wire dependencies; push cleanups on rt.stack
        nonces = await rt.kv(subjects.NONCES)          # KV/streams declared in contrast.subjects
        async def status(req: StatusRequest, ctx: RequestContext) -> StatusReply: ...
        async def verify(msg: AttestRequest, ctx: DeliveryContext) -> None:
            await ctx.publish(subjects.ATTEST_VERIFIED, verdict, msg_id=msg.request_id)  # durable, dedup'd
        return Handlers(
            endpoints=(Endpoint(name="status", subject=subjects.USER_STATUS, request_type=StatusRequest,
                                handler=status, max_bytes=1024, timeout=2.0),),
            workers=(StreamWorker(name="verify", consumer=subjects.verifier_consumer("initializer"),
                                  message_type=AttestRequest, handler=verify, max_in_flight=16,
                                  timeout=20.0),),
            ready_checks={"roots_loaded": check_roots},  # async () -> None; raise StateError if not ready
        )

    SERVICE = Service(name="verifier", version="0.1.0", description="...", build=build)
    if __name__ == "__main__":
        sys.exit(main(SERVICE))

    # flags (each with a CONTRAST_* env default): --nats/CONTRAST_NATS_URL, --replica, --metrics-port,
    # --metrics-addr, --max-concurrency, --max-pending, --shutdown-timeout, --log-level, --js-replicas

Endpoint handlers: ``async (request: Struct, ctx: RequestContext) -> Struct``. The runtime bounds the size
before decoding (``request.too_large``), decodes strictly (``request.decode``), runs the handler under
``timeout`` (``internal.timeout``) and a service-wide semaphore (``--max-concurrency``), and replies.
Raise any ``ContrastError`` to answer with its code; any other exception answers ``internal.error`` with a
correlation id (the traceback stays in this replica's log). ``ctx.request(subject, msg, ResponseType)``
calls another service in the same trace. Error replies are ``wire.v1.ErrorReply`` bodies with the header
``Nats-Service-Error-Code``.

Stream handlers: ``async (message: Struct, ctx: DeliveryContext) -> None``. Publish outputs with
``await ctx.publish(subject, struct, msg_id=...)`` before returning; return → ack. Raise :class:`RetryLater`
(or a ``collateral.*``/``state.*`` error) for transient faults → nak with backoff; any other ``ContrastError``
→ poison: dead-letter event (``contrast.v1.events.deadletter``, ``wire.v1.DeadLetter``) + term.
``ctx.num_delivered``, ``ctx.stream_seq``, ``ctx.msg_id`` give the delivery metadata.

Clients: ``await request(nc, subject, struct, ResponseType, timeout=5.0)`` returns the decoded response or
raises the typed ``ContrastError`` rebuilt from the reply (``state.unavailable`` if nobody answers).

Lifecycle: ``main`` → ``run_service`` → ``async with serve(service, config) as running`` (tests use ``serve``
directly and call ``running.stop()``). SIGTERM/SIGINT: not-ready, stop intake, drain accepted requests, finish
in-flight stream messages, close, exit 0. Readiness ("can do the job": NATS connected, subscribed, workers
running, plus the service's ``ready_checks``) answers on ``contrast.v1.health.<service>`` (``ReadinessReply``)
and is the ``contrast_ready`` gauge. Every replica answers ``$SRV.PING/INFO/STATS``.

Observability: ``configure_logging(service, replica)`` (JSON, with trace_id/span_id/service/replica; stdlib
logging included); ``inject(headers)``/``extract(headers)`` carry W3C trace context in NATS headers;
``build_tracer_provider`` reads ``OTEL_*``; ``current_tracer()`` is the tracer of the service (or command)
the calling code runs in, set by ``serve`` for everything the service starts; :class:`Metrics` holds one
registry per service with the metric names of :mod:`contrast.runtime.metrics`
(``rt.metrics.attestation_requests.labels(tee).inc()``); stream workers keep ``contrast_stream_pending`` at
their consumer's backlog.

Embedded NATS: ``contrast.runtime.natsserver.embedded_nats()`` / ``nats_cluster(3)`` / ``find_nats_server()``.
"""

from contrast.runtime.client import request
from contrast.runtime.config import RuntimeConfig
from contrast.runtime.endpoint import Endpoint, RequestContext
from contrast.runtime.logs import configure_logging, get_logger
from contrast.runtime.metrics import Metrics
from contrast.runtime.service import (
    Handlers,
    ReadyCheck,
    RunningService,
    Runtime,
    Service,
    main,
    run_service,
    serve,
)
from contrast.runtime.tracing import build_tracer_provider, extract, inject
from contrast.runtime.worker import DeliveryContext, RetryLater, StreamWorker

__all__ = [
    "DeliveryContext",
    "Endpoint",
    "Handlers",
    "Metrics",
    "ReadyCheck",
    "RequestContext",
    "RetryLater",
    "RunningService",
    "Runtime",
    "RuntimeConfig",
    "Service",
    "StreamWorker",
    "build_tracer_provider",
    "configure_logging",
    "extract",
    "get_logger",
    "inject",
    "main",
    "request",
    "run_service",
    "serve",
]
