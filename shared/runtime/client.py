"""Typed request helper: encode, send with the trace context, decode strictly, raise typed errors."""

from __future__ import annotations

from typing import Final, TypeVar

import msgspec
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from contrast.errors import ContrastError, InternalError, StateError, from_code
from contrast.runtime.endpoint import ERROR_CODE_HEADER
from contrast.runtime.tracing import current_tracer, inject
from contrast.wire.v1 import ErrorReply, decoder, encode

Resp = TypeVar("Resp", bound=msgspec.Struct)

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_SPAN_ATTRIBUTES: Final = {"messaging.system": "nats", "messaging.operation.type": "send"}


async def request(
    nc: Client,
    subject: str,
    message: msgspec.Struct,
    response_type: type[Resp],
    *,
    timeout: float = 5.0,
    tracer: Tracer | None = None,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> Resp:
    """Send ``message`` to ``subject`` and return the decoded ``response_type``.

    Raises the typed :class:`ContrastError` rebuilt from an error reply (by its code), ``state.unavailable``
    when no replica serves the subject or none answers in time, and ``internal.bad_reply`` for a reply that is
    neither a valid response nor a valid error. The span is named by the subject.
    """
    tracer = tracer or current_tracer()
    with tracer.start_as_current_span(
        subject,
        kind=SpanKind.CLIENT,
        attributes=_SPAN_ATTRIBUTES,
    ) as span:
        try:
            reply = await nc.request(subject, encode(message), timeout=timeout, headers=inject({}))
        except NoRespondersError as e:
            span.set_status(Status(StatusCode.ERROR, "no responders"))
            raise StateError("unavailable", f"no replica serves {subject}") from e
        except NatsTimeoutError as e:
            span.set_status(Status(StatusCode.ERROR, "timeout"))
            raise StateError("unavailable", f"no answer on {subject} within {timeout} s") from e
        if len(reply.data) > max_response_bytes:
            raise InternalError("bad_reply", f"reply of {len(reply.data)} bytes exceeds {max_response_bytes}")
        headers = reply.headers or {}
        try:
            if ERROR_CODE_HEADER in headers:
                err = decoder(ErrorReply).decode(reply.data)
                error: ContrastError = from_code(err.code, err.message)
                span.set_status(Status(StatusCode.ERROR, err.code))
                raise error
            return decoder(response_type).decode(reply.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            span.set_status(Status(StatusCode.ERROR, "bad reply"))
            raise InternalError(
                "bad_reply", f"reply on {subject} is not a valid {response_type.__name__}"
            ) from e
