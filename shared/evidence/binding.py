"""REPORT_DATA bindings: the 64 bytes that tie evidence to one exchange and to the keys it relies on.

``REPORT_DATA = SHA-512(label ‖ 0x00 ‖ u32(len(nonce)) ‖ nonce ‖ Σ u32(len(key)) ‖ key)``

Every protocol has its own label, so evidence made for one exchange never satisfies another. Every element is
length-prefixed, so no two different (nonce, keys) tuples hash the same input.
"""

from __future__ import annotations

import enum
import hashlib
import struct


class Label(enum.Enum):
    MESH_CERT = b"contrast mesh cert v1"  # initializer: nonce, TLS SPKI, HPKE public key
    COORDINATOR_STATEMENT = b"contrast coordinator statement v1"  # replica: nonce, service SPKI, HPKE key
    USER_API = b"contrast user api v1"  # manifest service reply: client nonce, transcript hash
    RECOVERY = b"contrast recovery v1"  # manifest replica asking for the seed: nonce, HPKE key
    USER_STATUS = b"contrast user status v1"  # manifest service status reply: client nonce, payload hash


def report_data(label: Label, nonce: bytes, *public_keys: bytes) -> bytes:
    """The 64-byte REPORT_DATA for ``label`` over ``nonce`` and ``public_keys`` (in order)."""
    h = hashlib.sha512(label.value + b"\x00")
    h.update(struct.pack(">I", len(nonce)) + nonce)
    for key in public_keys:
        h.update(struct.pack(">I", len(key)) + key)
    return h.digest()
