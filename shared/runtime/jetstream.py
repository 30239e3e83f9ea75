"""Create or update the streams, consumers and KV buckets declared in :mod:`contrast.subjects`.

Every replica calls these at start; they are idempotent, so the first replica creates and the others find the
same configuration. A changed bound in ``subjects.py`` is applied with an update on the next start.

In a cluster, JetStream can be briefly unable to answer: while it forms, while a new meta leader is elected
(the old one died), or while a stream's peers catch up. Each call is retried on a timeout, on "no responders"
and on 503 ("JetStream temporarily unavailable") for up to ``SETUP_DEADLINE`` seconds, with growing pauses,
so that a replica started during such a moment waits for it instead of exiting.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final, TypeVar

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue

from contrast.runtime.logs import get_logger
from contrast.subjects import ConsumerSpec, KVSpec, StreamSpec

SETUP_DEADLINE: Final = 60.0
STREAM_NAME_IN_USE: Final = 10058  # JetStream: a stream of that name exists with another configuration
SUBJECTS_OVERLAP: Final = 10065  # JetStream: another stream already takes some of these subjects
T = TypeVar("T")
_log = get_logger(__name__)


async def _patiently(what: str, call: Callable[[], Awaitable[T]], deadline: float = SETUP_DEADLINE) -> T:
    end = time.monotonic() + deadline
    attempt = 0
    while True:
        try:
            return await call()
        except (NatsTimeoutError, NoRespondersError, ServiceUnavailableError) as e:
            attempt += 1
            if time.monotonic() >= end:
                raise
            _log.info("jetstream_setup_retry", what=what, error=type(e).__name__, attempt=attempt)
            await asyncio.sleep(random.uniform(0.1, min(2.0, 0.1 * 2**attempt)))


_RETENTION = {
    "workqueue": RetentionPolicy.WORK_QUEUE,
    "limits": RetentionPolicy.LIMITS,
    "interest": RetentionPolicy.INTEREST,
}


def stream_config(spec: StreamSpec) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=_RETENTION[spec.retention],
        max_age=spec.max_age,
        max_bytes=spec.max_bytes,
        max_msgs=spec.max_msgs,
        max_msg_size=spec.max_msg_size,
        duplicate_window=spec.duplicate_window,
        num_replicas=spec.replicas,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW if spec.discard == "new" else DiscardPolicy.OLD,
        max_msgs_per_subject=spec.max_msgs_per_subject or -1,
        discard_new_per_subject=spec.max_msgs_per_subject > 0,
    )


def consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    # spec.backoff is applied by our nak(delay=...), not given to the server: a server-side backoff list
    # *replaces* ack_wait, and its first entry would redeliver a slow-but-alive handler's message early.
    return ConsumerConfig(
        durable_name=spec.durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        filter_subject=spec.filter_subject,
    )


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, *, replicas: int | None = None) -> None:
    if replicas is not None:
        spec = replace(spec, replicas=replicas)
    config = stream_config(spec)

    async def create_or_update() -> None:
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
            return
        await js.update_stream(config)

    try:
        await _patiently(f"stream {spec.name}", create_or_update)
    except APIError as e:
        if e.err_code != SUBJECTS_OVERLAP:
            raise
        # Typically the one ATTEST or NONCE stream of an older version, which took every source's subjects:
        # it must be drained and removed by the operator (docs/operations.md, "Upgrading").
        raise RuntimeError(
            f"stream {spec.name}: another stream already takes its subjects {list(spec.subjects)} "
            f"({e.description}); remove that stream once it is drained (docs/operations.md, 'Upgrading')"
        ) from e


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    # add_consumer with a durable name is create-or-update on the server side (same config is a no-op).
    config = consumer_config(spec)
    await _patiently(f"consumer {spec.durable}", lambda: js.add_consumer(spec.stream.name, config))


def republish_config(spec: KVSpec) -> RePublish | None:
    """The server-side republish of every stored entry of ``spec`` (key ``k`` on ``<spec.republish>.k``)."""
    if not spec.republish:
        return None
    return RePublish(src=f"{spec.subject_prefix}.>", dest=f"{spec.republish}.>", headers_only=False)


async def ensure_kv(js: JetStreamContext, spec: KVSpec, *, replicas: int | None = None) -> KeyValue:
    """Create the bucket, or bring an existing one (say, created by an older version without the
    republish) to ``spec``'s bounds and republish with an update of its stream."""
    config = KeyValueConfig(
        bucket=spec.bucket,
        history=spec.history,
        ttl=spec.ttl or None,
        max_value_size=spec.max_value_size,
        max_bytes=spec.max_bytes,
        replicas=replicas or spec.replicas,
        storage=StorageType.FILE,
        republish=republish_config(spec),
    )

    async def create_or_update() -> KeyValue:
        try:
            return await js.create_key_value(config)
        except BadRequestError as e:
            if e.err_code != STREAM_NAME_IN_USE:
                raise
        stream = (await js.stream_info(spec.stream)).config
        stream.max_msgs_per_subject = config.history
        stream.max_age = config.ttl or 0.0
        stream.max_msg_size = config.max_value_size
        stream.max_bytes = config.max_bytes
        stream.num_replicas = config.replicas
        stream.republish = config.republish
        await js.update_stream(stream)
        _log.info("bucket_updated", bucket=spec.bucket)
        return await js.key_value(spec.bucket)

    return await _patiently(f"bucket {spec.bucket}", create_or_update)
