"""JetStream work-queue workers: a durable pull consumer with bounded in-flight work.

Handler contract (same shape as endpoints): ``handler(message, ctx) -> None``. The handler publishes its
output durably with ``await ctx.publish(...)`` (a JetStream publish that waits for the PubAck, deduplicated by
``msg_id``) *before it returns*; only then is the input acked. Outcomes:

- returns → ``ack`` (waiting for the server's confirmation);
- raises :class:`RetryLater`, a ``collateral.*`` or ``state.*`` error, a timeout or an unexpected exception
  → transient: ``nak`` with the consumer's backoff for this delivery count;
- raises any other ``ContrastError`` (or the payload is oversized or does not decode) → poison: a
  :class:`~contrast.wire.v1.DeadLetter` event is published durably on ``contrast.v1.events.deadletter``, then
  the message is terminated;
- a transient failure on the last allowed delivery is dead-lettered as well. A message whose deliveries ran
  out without an answer (replicas crashed on it) is reported by the server's MAX_DELIVERIES advisory; one
  replica dead-letters it from the stream and deletes it.
- on a consumer without dead letters (``ConsumerSpec.dead_letters``: requests worthless once late), what
  would be dead-lettered is terminated and counted (``contrast_stream_deliveries_total{outcome="term"}``).

A worker with a ``pace`` pulls at most that many messages per second (see :mod:`contrast.runtime.pull`).

Redelivery makes every handler run at least once; handlers must be idempotent on the request id (publish with
``msg_id`` derived from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from contrast import subjects
from contrast.errors import CollateralError, ContrastError, InternalError, RequestError, StateError
from contrast.runtime.admission import Rate
from contrast.runtime.connection import SummaryLog
from contrast.runtime.endpoint import new_correlation_id, short
from contrast.runtime.jetstream import ensure_consumer, ensure_stream
from contrast.runtime.logs import get_logger
from contrast.runtime.pull import PullFeed
from contrast.runtime.tasks import stop_task
from contrast.runtime.tracing import extract, inject
from contrast.subjects import ConsumerSpec
from contrast.wire.v1 import DeadLetter, decoder, encode

if TYPE_CHECKING:
    from contrast.runtime.metrics import Metrics

MSG_ID_HEADER: Final = "Nats-Msg-Id"
BACKLOG_INTERVAL: Final = 5.0  # seconds between two reads of the consumer's backlog for the gauges
Msg_T = TypeVar("Msg_T", bound=msgspec.Struct)

_log = get_logger(__name__)


class RetryLater(Exception):
    """Raised by a stream handler for a transient fault: the message is nak'ed and redelivered later."""

    def __init__(self, reason: str, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


@dataclass(frozen=True, kw_only=True)
class DeliveryContext:
    """Delivery metadata and the means to publish output, for one delivery of one stream message."""

    service: str
    replica: str
    consumer: str
    subject: str
    headers: Mapping[str, str]
    msg_id: str  # the producer's Nats-Msg-Id ("" if none): the natural idempotency key
    stream_seq: int
    num_delivered: int
    correlation_id: str
    nc: Client
    js: JetStreamContext
    tracer: Tracer
    metrics: Metrics

    async def publish(
        self, subject: str, message: msgspec.Struct, *, msg_id: str, timeout: float = 5.0
    ) -> PubAck:
        """Publish ``message`` durably (waits for the stream's PubAck) with a dedup id, in this trace."""
        if not msg_id:
            raise ValueError("a durable output needs a msg_id so that a redelivery cannot duplicate it")
        headers = inject({MSG_ID_HEADER: msg_id})
        ack: PubAck = await self.js.publish(subject, encode(message), timeout=timeout, headers=headers)
        return ack


StreamHandler = Callable[[Msg_T, DeliveryContext], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class StreamWorker(Generic[Msg_T]):
    """A durable pull consumer running ``handler`` on each message of ``consumer.stream``.

    ``max_in_flight`` bounds this replica's concurrent messages (the consumer's ``max_ack_pending`` bounds all
    replicas together). ``timeout`` must stay below the consumer's ``ack_wait``, so that a live handler is
    never redelivered to another replica while it still runs.
    """

    name: str
    consumer: ConsumerSpec
    message_type: type[Msg_T]
    handler: StreamHandler[Msg_T]
    max_in_flight: int = 16
    timeout: float = 20.0
    max_bytes: int | None = None  # default: the stream's max_msg_size
    fetch_timeout: float = 1.0  # how long one pull request waits on the server for work (one per idle s)
    pace: Rate | None = None  # at most this many messages pulled per second by this replica

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"worker {self.name}: max_in_flight must be >= 1")
        if not 0 < self.timeout < self.consumer.ack_wait:
            raise ValueError(f"worker {self.name}: timeout must be positive and below ack_wait")
        if not 0 < self.fetch_timeout <= 30:
            raise ValueError(f"worker {self.name}: fetch_timeout out of range")
        decoder(self.message_type)

    @property
    def limit(self) -> int:
        return self.max_bytes or self.consumer.stream.max_msg_size

    def backoff(self, num_delivered: int) -> float:
        steps = self.consumer.backoff or (1.0,)
        return steps[min(num_delivered, len(steps)) - 1]


class _MaxDeliveries(msgspec.Struct):
    # Server advisory io.nats.jetstream.advisory.v1.max_deliver; not strict: the server may add fields.
    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


# What the dead letter of a message that does not even decode keeps of it: enough to recognise it. It cannot
# be replayed after a fix, and a flood of garbage would otherwise copy itself into EVENTS (up to the stream's
# max message size each) and push the audit log's older entries out.
UNREADABLE_KEPT: Final = 1024
_UNREADABLE: Final = frozenset({"request.decode", "request.too_large"})


class WorkerRunner:
    """Runs one :class:`StreamWorker` in this replica."""

    def __init__(
        self,
        worker: StreamWorker[Any],
        *,
        nc: Client,
        js: JetStreamContext,
        service: str,
        replica: str,
        tracer: Tracer,
        metrics: Metrics,
        js_replicas: int | None = None,
    ) -> None:
        self.worker = worker
        self._nc, self._js = nc, js
        self._service, self._replica = service, replica
        self._tracer, self._metrics = tracer, metrics
        self._js_replicas = js_replicas
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._feed: PullFeed | None = None
        self._task_name = f"{worker.name}-message"
        # Labelled metric children, looked up once instead of per message.
        self._in_flight = metrics.in_flight.labels("stream")
        self._outcomes: dict[str, Any] = {}
        self._advisories: Subscription | None = None
        self._backlog_task: asyncio.Task[None] | None = None
        self._dead_letter_lines = SummaryLog()  # dead letters since the last log line
        self.running = False

    async def start(self) -> None:
        spec = self.worker.consumer
        await ensure_stream(self._js, spec.stream, replicas=self._js_replicas)
        if spec.dead_letters:
            await ensure_stream(self._js, subjects.EVENTS, replicas=self._js_replicas)
        await ensure_consumer(self._js, spec)
        self._feed = PullFeed(
            self._nc,
            api_prefix=self._js._prefix,
            stream=spec.stream.name,
            durable=spec.durable,
            capacity=self.worker.max_in_flight,
            expires=self.worker.fetch_timeout,
            dispatch=self._dispatch,
            name=self.worker.name,
            pace=self.worker.pace,
        )
        await self._feed.start()
        if spec.dead_letters:
            advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{spec.stream.name}.{spec.durable}"
            self._advisories = await self._nc.subscribe(
                advisory, queue=f"{spec.durable}-dlq", cb=self._on_max_deliveries
            )
        self._loop_task = asyncio.create_task(self._feed.run(), name=f"{self.worker.name}-pull")
        self._backlog_task = asyncio.create_task(self._watch_backlog(), name=f"{self.worker.name}-backlog")
        self.running = True

    async def _watch_backlog(self) -> None:
        """Keep ``contrast_stream_pending`` / ``contrast_stream_ack_pending`` at the server's counts, so that
        a backlog shows (and alerts) even when no replica pulls any more."""
        spec = self.worker.consumer
        pending = self._metrics.stream_pending.labels(spec.durable)
        ack_pending = self._metrics.stream_ack_pending.labels(spec.durable)
        while True:
            try:
                info = await self._js.consumer_info(spec.stream.name, spec.durable, timeout=2.0)
                pending.set(info.num_pending or 0)
                ack_pending.set(info.num_ack_pending or 0)
            except Exception as e:  # NATS busy or reconnecting: keep the last reading
                _log.debug("backlog_read_failed", worker=self.worker.name, error=type(e).__name__)
            await asyncio.sleep(BACKLOG_INTERVAL)

    async def stop(self, timeout: float) -> bool:
        """Stop pulling, finish in-flight messages (ack/nak), then unsubscribe. False if the budget ran out
        (unfinished messages are simply redelivered to another replica after ack_wait)."""
        deadline = time.monotonic() + timeout
        await stop_task(self._backlog_task)
        if self._feed is not None:
            self._feed.stop()
        if self._loop_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(self._loop_task), max(0.01, deadline - time.monotonic())
                )
            if not self._loop_task.done():
                self._loop_task.cancel()
        ok = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(0.01, deadline - time.monotonic()))
            for task in pending:
                task.cancel()
            ok = not pending
        if self._feed is not None:
            await self._feed.close(max(0.0, deadline - time.monotonic()))
        if self._advisories is not None:
            with contextlib.suppress(Exception):
                await self._advisories.unsubscribe()
        self.running = False
        return ok

    def _dispatch(self, msg: Msg) -> None:
        task = asyncio.create_task(self._process(msg), name=self._task_name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._feed is not None:
            self._feed.release()

    async def _process(self, msg: Msg) -> None:
        w = self.worker
        md = msg.metadata
        num_delivered = md.num_delivered or 1
        stream_seq = md.sequence.stream if md.sequence else 0
        headers = dict(msg.headers) if msg.headers else {}
        self._in_flight.inc()
        # One CONSUMER span per delivery, child of the producer's trace. Few attributes: the SDK copies and
        # validates each one, and this runs for every message.
        with self._tracer.start_as_current_span(
            w.consumer.span_name,  # one name per operation, whatever the source
            context=extract(headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.message.id": headers.get(MSG_ID_HEADER, ""),
                "contrast.num_delivered": num_delivered,
            },
        ) as span:
            correlation_id = new_correlation_id()
            outcome = "ack"
            try:
                await self._run_handler(msg, headers, stream_seq, num_delivered, correlation_id)
                # The handler's output is durable (its PubAck came back), so a plain ack is enough:
                # should this ack be lost, ack_wait redelivers the message, the handler runs again and,
                # being idempotent per request id (the output's Nats-Msg-Id, KV create/compare-and-set),
                # yields the same output, which the stream deduplicates. ack_sync would cost every
                # message a round trip to learn something that changes nothing.
                await msg.ack()
            except RetryLater as e:
                outcome = await self._transient(
                    msg, num_delivered, stream_seq, "transient", e.reason, e.delay
                )
            except (CollateralError, StateError) as e:
                outcome = await self._transient(msg, num_delivered, stream_seq, e.code, e.message, None)
            except ContrastError as e:
                outcome = await self._dead_letter(msg, stream_seq, num_delivered, e.code, e.message)
            except TimeoutError:
                outcome = await self._transient(
                    msg, num_delivered, stream_seq, "internal.timeout", "handler timeout", None
                )
            except Exception:
                _log.exception("stream_handler_failed", worker=w.name, correlation_id=correlation_id)
                outcome = await self._transient(
                    msg,
                    num_delivered,
                    stream_seq,
                    "internal.error",
                    f"internal error; correlation id {correlation_id}",
                    None,
                )
            if outcome != "ack":
                span.set_status(Status(StatusCode.ERROR, outcome))
                span.set_attribute("contrast.outcome", outcome)
        self._in_flight.dec()
        self._deliveries(outcome).inc()

    def _deliveries(self, outcome: str) -> Any:
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = self._metrics.deliveries.labels(
                self.worker.consumer.durable, outcome
            )
        return counter

    async def _run_handler(
        self, msg: Msg, headers: dict[str, str], stream_seq: int, num_delivered: int, correlation_id: str
    ) -> None:
        w = self.worker
        if len(msg.data) > w.limit:
            raise RequestError(
                "too_large", f"message of {len(msg.data)} bytes exceeds the limit of {w.limit}"
            )
        try:
            message = decoder(w.message_type).decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise RequestError("decode", short(f"not a valid {w.message_type.__name__}: {e}", 256)) from e
        ctx = DeliveryContext(
            service=self._service,
            replica=self._replica,
            consumer=w.consumer.durable,
            subject=msg.subject,
            headers=headers,
            msg_id=headers.get(MSG_ID_HEADER, ""),
            stream_seq=stream_seq,
            num_delivered=num_delivered,
            correlation_id=correlation_id,
            nc=self._nc,
            js=self._js,
            tracer=self._tracer,
            metrics=self._metrics,
        )
        async with asyncio.timeout(w.timeout):
            await w.handler(message, ctx)

    async def _transient(
        self, msg: Msg, num_delivered: int, stream_seq: int, code: str, message: str, delay: float | None
    ) -> str:
        if num_delivered >= self.worker.consumer.max_deliver:
            code = code if "." in code else "internal.retries_exhausted"
            return await self._dead_letter(
                msg, stream_seq, num_delivered, code, f"gave up after retries: {message}"
            )
        wait = self.worker.backoff(num_delivered) if delay is None else delay
        _log.info("stream_retry", worker=self.worker.name, code=code, delay=wait, num_delivered=num_delivered)
        with contextlib.suppress(Exception):  # if the nak is lost, ack_wait redelivers anyway
            await msg.nak(delay=wait)
        return "nak"

    async def _dead_letter(
        self, msg: Msg, stream_seq: int, num_delivered: int, code: str, message: str
    ) -> str:
        w = self.worker
        if not w.consumer.dead_letters:  # worthless once late: drop it, counted with the term outcome
            _log.debug("stream_dropped", worker=w.name, code=code, stream_seq=stream_seq)
            with contextlib.suppress(Exception):
                await msg.term()
            return "term"
        letter = DeadLetter(
            stream=w.consumer.stream.name,
            consumer=w.consumer.durable,
            stream_seq=stream_seq,
            subject=short(msg.subject, 256),
            msg_id=short((msg.headers or {}).get(MSG_ID_HEADER, ""), 256),
            deliveries=num_delivered,
            code=code,
            message=short(message),
            payload=msg.data[: UNREADABLE_KEPT if code in _UNREADABLE else w.consumer.stream.max_msg_size],
        )
        try:
            await self._publish_dead_letter(letter)
        except Exception as e:
            # Without a durable dead letter the message must not disappear: leave it for redelivery.
            _log.error("deadletter_publish_failed", worker=w.name, error=type(e).__name__)
            with contextlib.suppress(Exception):
                await msg.nak(delay=w.backoff(num_delivered))
            return "nak"
        self._log_dead_letter(code, stream_seq)
        self._metrics.deadletters.labels(w.consumer.durable, code).inc()
        with contextlib.suppress(Exception):
            await msg.term()
        return "term"

    def _log_dead_letter(self, code: str, stream_seq: int) -> None:
        # In summary, at most one line per interval: a flood of garbage is dead-lettered at the worker's pace,
        # and a line each would spend the replica's CPU on its log. Each letter is in EVENTS and counted in
        # contrast_deadletters_total.
        count = self._dead_letter_lines.record()
        if count is not None:
            _log.warning(
                "stream_dead_letters", worker=self.worker.name, count=count, code=code, stream_seq=stream_seq
            )

    async def _publish_dead_letter(self, letter: DeadLetter) -> None:
        headers = inject({MSG_ID_HEADER: f"deadletter-{letter.stream}-{letter.stream_seq}"})
        await self._js.publish(subjects.EVENT_DEADLETTER, encode(letter), headers=headers)

    async def _on_max_deliveries(self, msg: Msg) -> None:
        w = self.worker
        try:
            advisory = msgspec.json.decode(msg.data, type=_MaxDeliveries)
            stored = await self._js.get_msg(advisory.stream, advisory.stream_seq)
        except Exception as e:  # already dead-lettered by us and removed, or a malformed advisory
            _log.info("max_deliveries_skipped", worker=w.name, error=type(e).__name__)
            return
        if advisory.stream != w.consumer.stream.name or advisory.consumer != w.consumer.durable:
            return
        letter = DeadLetter(
            stream=advisory.stream,
            consumer=advisory.consumer,
            stream_seq=advisory.stream_seq,
            subject=short(stored.subject or "", 256),
            msg_id=short((stored.headers or {}).get(MSG_ID_HEADER, ""), 256),
            deliveries=advisory.deliveries,
            code=InternalError("max_deliveries", "").code,
            message="no replica finished this message within max_deliver deliveries",
            payload=(stored.data or b"")[: w.consumer.stream.max_msg_size],
        )
        try:
            await self._publish_dead_letter(letter)
            await self._js.delete_msg(advisory.stream, advisory.stream_seq)
        except Exception as e:
            _log.error("deadletter_publish_failed", worker=w.name, error=type(e).__name__)
            return
        self._log_dead_letter(letter.code, letter.stream_seq)
        self._metrics.deadletters.labels(w.consumer.durable, letter.code).inc()
