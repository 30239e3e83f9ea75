"""The two DER primitives our private extensions need: OCTET STRING and UTF8String, strictly.

Decoding accepts exactly one definite-length, minimally encoded TLV of the expected tag and nothing after
it; anything else raises ``ValueError``.
"""

from __future__ import annotations

from typing import Final

TAG_OCTET_STRING: Final = 0x04
TAG_UTF8_STRING: Final = 0x0C


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _encode_length(len(value)) + value


def decode(tag: int, data: bytes) -> bytes:
    if len(data) < 2 or data[0] != tag:
        raise ValueError("unexpected DER tag")
    first = data[1]
    if first < 0x80:
        length, off = first, 2
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or len(data) < 2 + n:
            raise ValueError("unsupported DER length")
        length, off = int.from_bytes(data[2 : 2 + n], "big"), 2 + n
        if length < 0x80 or data[2] == 0:
            raise ValueError("non-minimal DER length")
    if len(data) != off + length:
        raise ValueError("DER length does not match the data")
    return data[off:]


def octet_string(value: bytes) -> bytes:
    return encode(TAG_OCTET_STRING, value)


def utf8_string(value: str) -> bytes:
    return encode(TAG_UTF8_STRING, value.encode("utf-8"))


def decode_octet_string(data: bytes) -> bytes:
    return decode(TAG_OCTET_STRING, data)


def decode_utf8_string(data: bytes) -> str:
    return decode(TAG_UTF8_STRING, data).decode("utf-8")
