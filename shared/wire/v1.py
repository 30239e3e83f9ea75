"""Version 1 of the wire schema: every msgspec Struct sent over NATS, in one module.

Encoding is **MessagePack** (msgspec): compact, binary-safe for keys, evidence and certificates without
base64, and decoded by msgspec at ~0.5 M msgs/s. Every message type subclasses :class:`WireStruct` (declare
``frozen=True, kw_only=True`` again on each subclass: msgspec does not inherit ``kw_only``, and mypy needs
``frozen`` restated): frozen, keyword-only, and rejecting unknown
fields; :func:`decoder` returns a cached strict decoder, which also rejects wrong types and trailing bytes.
Size bounds are checked by the runtime *before* decoding (see ``contrast.runtime.endpoint``);
bytes and list fields that can be large carry ``Meta(max_length=...)`` as a second bound.

Signed documents (verdicts, history entries) must be encoded with :func:`encode_deterministic` and their
signature checked over the *received* bytes before they are decoded.

Other engineers add their Structs in the marked sections below; keep one section per flow.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Final, TypeVar

import msgspec

SCHEMA_VERSION: Final = 1

# A Struct's ``code`` is ``family.reason`` as defined in ``contrast.errors``; bounded so that a hostile peer
# cannot make us log or store megabytes of "error code".
ErrorCode = Annotated[
    str, msgspec.Meta(min_length=3, max_length=128, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
]
ShortText = Annotated[str, msgspec.Meta(max_length=1024)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class WireStruct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every message on the wire: immutable, keyword-only, unknown fields rejected."""


S = TypeVar("S", bound=msgspec.Struct)

_ENCODER: Final = msgspec.msgpack.Encoder()
_DETERMINISTIC: Final = msgspec.msgpack.Encoder(order="deterministic")


def encode(message: msgspec.Struct) -> bytes:
    """Encode a wire message as MessagePack."""
    return _ENCODER.encode(message)


def encode_deterministic(message: msgspec.Struct) -> bytes:
    """Encode with sorted map keys, so that the same value always gives the same bytes (for signing)."""
    return _DETERMINISTIC.encode(message)


@functools.cache
def _decoder(message_type: type[Any]) -> msgspec.msgpack.Decoder[Any]:
    config = getattr(message_type, "__struct_config__", None)
    if config is None or not config.forbid_unknown_fields:
        raise TypeError(f"{message_type.__name__} is not a strict wire Struct (forbid_unknown_fields)")
    return msgspec.msgpack.Decoder(message_type)


def decoder(message_type: type[S]) -> msgspec.msgpack.Decoder[S]:
    """Return the cached strict MessagePack decoder for ``message_type``.

    ``decoder(T).decode(data)`` raises ``msgspec.ValidationError`` (wrong type, unknown field, bound exceeded)
    or ``msgspec.DecodeError`` (malformed or trailing bytes). The runtime maps both to ``request.decode``.
    """
    return _decoder(message_type)


# --- runtime (errors, readiness) ---


class ErrorReply(WireStruct, frozen=True, kw_only=True):
    """A typed error reply. It carries a stable code and a human message, never a traceback or a ``repr``.

    ``correlation_id`` lets an operator find the replica's log line for an ``internal.*`` error.
    """

    code: ErrorCode
    message: ShortText
    correlation_id: Annotated[str, msgspec.Meta(max_length=64)] = ""


class ReadinessCheck(WireStruct, frozen=True, kw_only=True):
    """One condition of readiness ("can do the job"): NATS connected, subscribed, keys loaded, ..."""

    name: Name
    ok: bool
    detail: ShortText = ""


class ReadinessReply(WireStruct, frozen=True, kw_only=True):
    """Answer of a replica's readiness endpoint (``contrast.v1.health.<service>``)."""

    service: Name
    replica: Name
    version: Name
    ready: bool
    checks: Annotated[list[ReadinessCheck], msgspec.Meta(max_length=64)] = []


class ReadinessRequest(WireStruct, frozen=True, kw_only=True):
    """Empty request to the readiness endpoint."""


# --- attestation flow ---


# --- user API (manifest service) ---


# --- coordinator join ---


# --- events ---


class DeadLetter(WireStruct, frozen=True, kw_only=True):
    """Event on ``contrast.v1.events.deadletter``: a stream message was given up on (terminated).

    ``payload`` is the original message (bounded by the stream's max message size) so that an operator can
    replay it after a fix; it may contain only what the stream held anyway.
    """

    stream: Name
    consumer: Name
    stream_seq: int
    subject: Annotated[str, msgspec.Meta(max_length=256)]
    msg_id: Annotated[str, msgspec.Meta(max_length=256)] = ""
    deliveries: int
    code: ErrorCode
    message: ShortText
    payload: bytes = b""
