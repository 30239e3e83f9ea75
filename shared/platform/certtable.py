"""The SNP extended-report certificate table (GHCB spec; ``auxblob`` of configfs-tsm, SNP_GET_EXT_REPORT).

A table of 24-byte entries ``{GUID (16), offset (u32 LE), length (u32 LE)}`` ending in an all-zero entry;
offsets are relative to the start of the table. We keep the VCEK/VLEK, ASK/ASVK and ARK and ignore unknown
GUIDs. The certificates are untrusted input: the verifier checks each against the pinned roots.
"""

from __future__ import annotations

import struct
import uuid
from typing import Final

from contrast.errors import EvidenceError

ENTRY_SIZE: Final = 24
MAX_TABLE_BYTES: Final = 64 * 1024

# GUIDs from the GHCB spec (as in go-sev-guest). Hosts write them in RFC 4122 byte order; the mixed-endian
# form is accepted too because both appear in the wild and the GUID is only a label.
_KNOWN: Final = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
}
_BY_BYTES: Final = {u.bytes: n for u, n in _KNOWN.items()} | {u.bytes_le: n for u, n in _KNOWN.items()}


def parse_cert_table(blob: bytes) -> dict[str, bytes]:
    """Return ``{"vcek"|"vlek"|"ask"|"ark": DER}`` from a certificate table; raise ``evidence.malformed``."""
    if len(blob) > MAX_TABLE_BYTES:
        raise EvidenceError("malformed", f"certificate table of {len(blob)} bytes exceeds {MAX_TABLE_BYTES}")
    out: dict[str, bytes] = {}
    pos = 0
    while True:
        if pos + ENTRY_SIZE > len(blob):
            raise EvidenceError("malformed", "certificate table has no terminating entry")
        guid, offset, length = struct.unpack_from("<16sII", blob, pos)
        pos += ENTRY_SIZE
        if guid == bytes(16) and offset == 0 and length == 0:
            return out
        if offset < pos or offset + length > len(blob):
            raise EvidenceError("malformed", f"certificate table entry {guid.hex()} points outside the table")
        name = _BY_BYTES.get(guid)
        if name is not None:
            if name in out:
                raise EvidenceError("malformed", f"certificate table lists {name} twice")
            out[name] = blob[offset : offset + length]


def build_cert_table(certs: dict[str, bytes]) -> bytes:
    """The inverse of :func:`parse_cert_table` (RFC 4122 GUID byte order); used by tests and tools."""
    names = {n: u for u, n in _KNOWN.items()}
    header = bytearray()
    body = bytearray()
    base = ENTRY_SIZE * (len(certs) + 1)
    for name, der in certs.items():
        header += struct.pack("<16sII", names[name].bytes, base + len(body), len(der))
        body += der
    return bytes(header + bytes(ENTRY_SIZE) + body)
