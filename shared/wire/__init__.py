"""Wire schema of every message that crosses NATS.

There is exactly one versioned schema module, :mod:`contrast.wire.v1`. Services import the Structs and the
``encode``/``decoder`` helpers from there; a future incompatible schema goes into ``v2`` next to it, with its
own subjects (``contrast.v2.*``), so both can be served during a rollout.
"""

from contrast.wire.v1 import (
    SCHEMA_VERSION,
    ErrorReply,
    ReadinessCheck,
    ReadinessReply,
    WireStruct,
    decoder,
    encode,
)

__all__ = [
    "SCHEMA_VERSION",
    "ErrorReply",
    "ReadinessCheck",
    "ReadinessReply",
    "WireStruct",
    "decoder",
    "encode",
]
