"""Request/reply endpoints: the handler contract and the dispatcher that enforces the input rules.

For every message the dispatcher (in this order):

1. waits for a slot of the service's semaphore, then handles the message in its own task — nats-py runs one
   subscription's callbacks strictly one after another, so without this one slow handler serialises all;
2. checks the size bound **before** decoding (``request.too_large``);
3. decodes strictly with msgspec (``request.decode``: unknown fields, wrong types, trailing bytes);
4. runs the handler under its timeout, in a SERVER span whose parent comes from the request's headers;
5. replies with the encoded response, or with an :class:`~contrast.wire.v1.ErrorReply`: a ``ContrastError``
   keeps its code; anything else becomes ``internal.error`` with a correlation id, and the details (traceback)
   stay in this replica's log. The replica keeps serving.

Replies are sent with ``nc.publish(msg.reply, ..., headers=...)``: ``Msg.respond`` would echo the request's
headers (including its ``traceparent``) back to the caller. A request that arrived on a connection since lost
is handled but not answered: the server would refuse the reply (:mod:`contrast.runtime.replies`).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from contrast.errors import ContrastError, InternalError, RequestError
from contrast.runtime.logs import get_logger
from contrast.runtime.replies import Intake, ReplyGate
from contrast.runtime.tracing import extract, inject
from contrast.wire.v1 import ErrorReply, decoder, encode

if TYPE_CHECKING:
    from contrast.runtime.metrics import Metrics

# Error replies carry these headers (the NATS micro convention, so generic micro clients see an error) and an
# ErrorReply body. The code header holds our ``family.reason`` code.
ERROR_HEADER: Final = "Nats-Service-Error"
ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"
DEFAULT_QUEUE_GROUP: Final = "q"
MAX_ERROR_MESSAGE: Final = 512

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$")  # literal subjects only

Req = TypeVar("Req", bound=msgspec.Struct)
Resp = TypeVar("Resp", bound=msgspec.Struct)

_log = get_logger(__name__)
_SPAN_ATTRIBUTES: Final = {"messaging.system": "nats", "messaging.operation.type": "process"}


def short(text: str, limit: int = MAX_ERROR_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def new_correlation_id() -> str:
    """The current trace id when there is one (so the log, the trace and the reply line up), else random."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else secrets.token_hex(16)


@dataclass(frozen=True, kw_only=True)
class RequestContext:
    """What a handler may use besides its decoded request. Immutable; one per request."""

    service: str
    replica: str
    subject: str
    headers: Mapping[str, str]
    correlation_id: str
    deadline: float  # time.monotonic() by which the reply must be sent
    nc: Client
    js: JetStreamContext
    tracer: Tracer
    metrics: Metrics

    @property
    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def request(
        self,
        subject: str,
        message: msgspec.Struct,
        response_type: type[Resp],
        *,
        timeout: float | None = None,
    ) -> Resp:
        """Call another service within this request's trace and remaining time budget."""
        from contrast.runtime.client import request

        budget = self.remaining if timeout is None else min(timeout, self.remaining)
        return await request(self.nc, subject, message, response_type, timeout=budget, tracer=self.tracer)


Handler = Callable[[Req, RequestContext], Awaitable[msgspec.Struct]]


@dataclass(frozen=True, kw_only=True)
class Endpoint(Generic[Req]):
    """One request/reply endpoint: ``handler(request, ctx) -> response Struct``.

    ``name`` is the micro endpoint name shown by ``$SRV.INFO``; ``subject`` a literal subject from
    :mod:`contrast.subjects`. ``max_bytes`` bounds the raw payload before decoding; ``timeout`` bounds the
    handler (it then answers ``internal.timeout``).
    """

    name: str
    subject: str
    request_type: type[Req]
    handler: Handler[Req]
    max_bytes: int = 64 * 1024
    timeout: float = 5.0
    queue_group: str = DEFAULT_QUEUE_GROUP
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid endpoint name {self.name!r}")
        if not _SUBJECT.match(self.subject):
            raise ValueError(f"invalid endpoint subject {self.subject!r} (a literal subject)")
        if not _NAME.match(self.queue_group):
            raise ValueError(f"invalid queue group {self.queue_group!r}")
        if not 0 < self.max_bytes <= 64 * 1024 * 1024:
            raise ValueError(f"endpoint {self.name}: max_bytes out of range")
        if not 0 < self.timeout <= 600:
            raise ValueError(f"endpoint {self.name}: timeout out of range")
        decoder(self.request_type)  # raises TypeError unless it is a strict wire Struct


def error_reply(error: ContrastError, correlation_id: str) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a typed error reply."""
    message = short(error.message)
    body = encode(ErrorReply(code=error.code, message=message, correlation_id=correlation_id))
    headers = inject(
        {ERROR_CODE_HEADER: error.code, ERROR_HEADER: message.replace("\r", " ").replace("\n", " ")}
    )
    return body, headers


@dataclass
class EndpointStats:
    num_requests: int = 0
    num_errors: int = 0
    processing_ns: int = 0
    last_error: str = ""  # an error *code*, never a repr: $SRV.STATS is readable by anyone on the bus


class EndpointServer:
    """Subscribes the endpoints (queue groups) and dispatches each message to a bounded task."""

    def __init__(
        self,
        *,
        nc: Client,
        js: JetStreamContext,
        endpoints: tuple[Endpoint[Any], ...],
        service: str,
        replica: str,
        tracer: Tracer,
        metrics: Metrics,
        max_concurrency: int,
        max_pending: int,
    ) -> None:
        self._nc, self._js = nc, js
        self.endpoints = endpoints
        self._service, self._replica = service, replica
        self._tracer, self._metrics = tracer, metrics
        self._slots = asyncio.Semaphore(max_concurrency)
        self._max_pending = max_pending
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats: dict[str, EndpointStats] = {ep.name: EndpointStats() for ep in endpoints}
        # Labelled metric children, looked up once rather than on every request.
        self._in_flight = metrics.in_flight.labels("request")
        self._seconds = {ep.name: metrics.request_seconds.labels(ep.name) for ep in endpoints}
        self._counters: dict[tuple[str, str], Any] = {}
        self.draining = False

    @property
    def subscribed(self) -> bool:
        return len(self._subs) == len(self.endpoints) and not self.draining

    async def start(self) -> None:
        gate = ReplyGate(self._nc)
        for ep in self.endpoints:
            intake = gate.intake()
            intake.sub = await self._nc.subscribe(
                ep.subject,
                queue=ep.queue_group,
                cb=self._callback(ep, intake),
                pending_msgs_limit=self._max_pending,
            )
            self._subs.append(intake.sub)
        await self._nc.flush()

    def _callback(self, ep: Endpoint[Any], intake: Intake) -> Callable[[Msg], Awaitable[None]]:
        async def on_message(msg: Msg) -> None:
            answerable = intake.arrived()
            # Awaiting the slot here (not in the task) applies backpressure: further messages wait in the
            # subscription's bounded pending queue instead of becoming unbounded tasks.
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(ep, msg, answerable), name=f"{ep.name}-request")
            self._tasks.add(task)
            task.add_done_callback(self._done)

        return on_message

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def drain(self, timeout: float) -> bool:
        """Stop intake (unsubscribe after the server flushed what it routed to us), let queued messages be
        dispatched, and wait for in-flight handlers. Returns False if the budget ran out first."""
        self.draining = True
        deadline = time.monotonic() + timeout
        for sub in self._subs:
            try:
                await asyncio.wait_for(sub.drain(), max(0.01, deadline - time.monotonic()))  # type: ignore[no-untyped-call]
            except (TimeoutError, Exception) as e:  # a closed connection: nothing left to drain
                _log.warning("endpoint_drain_incomplete", error=type(e).__name__)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(0.01, deadline - time.monotonic()))
            if pending:
                _log.error("endpoint_drain_timeout", abandoned=len(pending))
                for task in pending:
                    task.cancel()
                return False
        return True

    async def _handle(self, ep: Endpoint[Any], msg: Msg, answerable: Callable[[], bool]) -> None:
        started = time.perf_counter_ns()
        stats = self.stats[ep.name]
        stats.num_requests += 1
        self._in_flight.inc()
        code = "ok"
        # One SERVER span per request, named by the subject; service and replica are resource attributes
        # already. Few span attributes: the SDK copies and validates each one on every request.
        with self._tracer.start_as_current_span(
            ep.subject,
            context=extract(msg.headers),
            kind=SpanKind.SERVER,
            attributes=_SPAN_ATTRIBUTES,
        ) as span:
            correlation_id = new_correlation_id()
            try:
                body, headers = await self._respond(ep, msg, correlation_id)
            except ContrastError as e:
                code = e.code
                body, headers = error_reply(e, correlation_id)
            except TimeoutError:
                code = "internal.timeout"
                _log.warning(
                    "handler_timeout", endpoint=ep.name, timeout=ep.timeout, correlation_id=correlation_id
                )
                body, headers = error_reply(
                    InternalError(
                        "timeout", f"no answer within {ep.timeout} s; correlation id {correlation_id}"
                    ),
                    correlation_id,
                )
            except Exception:
                code = "internal.error"
                _log.exception("handler_failed", endpoint=ep.name, correlation_id=correlation_id)
                body, headers = error_reply(
                    InternalError("error", f"internal error; correlation id {correlation_id}"), correlation_id
                )
            if code != "ok":
                stats.num_errors += 1
                stats.last_error = code
                span.set_status(Status(StatusCode.ERROR, code))
                span.set_attribute("contrast.error.code", code)
            if msg.reply and not answerable():
                _log.info("reply_dropped", endpoint=ep.name, reason="the request arrived before a reconnect")
            elif msg.reply:
                try:
                    await self._nc.publish(msg.reply, body, headers=headers)
                except Exception as e:  # connection lost: the caller times out and retries
                    _log.warning("reply_failed", endpoint=ep.name, error=type(e).__name__)
        elapsed = time.perf_counter_ns() - started
        stats.processing_ns += elapsed
        self._in_flight.dec()
        self._requests(ep.name, code).inc()
        self._seconds[ep.name].observe(elapsed / 1e9)

    def _requests(self, endpoint: str, code: str) -> Any:
        counter = self._counters.get((endpoint, code))
        if counter is None:  # error codes form a small closed set (ContrastError families)
            counter = self._counters[endpoint, code] = self._metrics.requests.labels(endpoint, code)
        return counter

    async def _respond(
        self, ep: Endpoint[Any], msg: Msg, correlation_id: str
    ) -> tuple[bytes, dict[str, str]]:
        if not msg.reply:  # a request nobody waits for: do no work for it (a cheap amplification otherwise)
            raise RequestError("no_reply", "request/reply endpoint called without a reply subject")
        size = len(msg.data)
        if size > ep.max_bytes:
            raise RequestError("too_large", f"request of {size} bytes exceeds the limit of {ep.max_bytes}")
        try:
            request = decoder(ep.request_type).decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise RequestError("decode", short(f"not a valid {ep.request_type.__name__}: {e}", 256)) from e
        ctx = RequestContext(
            service=self._service,
            replica=self._replica,
            subject=msg.subject,
            headers=dict(msg.headers or {}),
            correlation_id=correlation_id,
            deadline=time.monotonic() + ep.timeout,
            nc=self._nc,
            js=self._js,
            tracer=self._tracer,
            metrics=self._metrics,
        )
        async with asyncio.timeout(ep.timeout):
            response = await ep.handler(request, ctx)
        if not isinstance(response, msgspec.Struct):
            raise TypeError(f"handler {ep.name} returned {type(response).__name__}, not a Struct")
        return encode(response), inject({})
