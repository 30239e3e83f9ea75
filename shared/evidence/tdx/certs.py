"""PEM chains to DER; the signed part and the Names of DER certificates and CRLs, without re-encoding.

The quote and the collateral carry their chains as PEM. We decode PEM ourselves, strictly (only
``CERTIFICATE`` blocks, only whitespace around them, canonical base64 alphabet), because we need the exact
DER anyway: it is what the root pin hashes, what :class:`~contrast.evidence.tdx.verify.VerifiedTdxQuote`
reports, and what the issuer signed. ``cryptography`` would give the same bytes only by re-encoding its
parsed certificate (``public_bytes``, ``tbs_certificate_bytes``), which costs more than parsing it did.
"""

from __future__ import annotations

import binascii
from typing import Final

_BEGIN: Final = b"-----BEGIN CERTIFICATE-----"
_END: Final = b"-----END CERTIFICATE-----"
_WHITESPACE: Final = b" \t\r\n"
_SEQUENCE: Final = 0x30
_INTEGER: Final = 0x02
_VERSION: Final = 0xA0  # [0] EXPLICIT


def pem_certificates(pem: bytes) -> list[bytes]:
    """The DER of each ``CERTIFICATE`` block of ``pem``, in order. Raises ``ValueError`` on anything else:
    text outside a block, another block type, an unterminated block, or base64 that is not strict."""
    ders: list[bytes] = []
    pos, end = 0, len(pem)
    while True:
        while pos < end and pem[pos] in _WHITESPACE:
            pos += 1
        if pos == end:
            break
        if not pem.startswith(_BEGIN, pos):
            raise ValueError("PEM has text outside a CERTIFICATE block")
        stop = pem.find(_END, pos)
        if stop < 0:
            raise ValueError("PEM CERTIFICATE block is not terminated")
        # Line breaks inside the block are whitespace; any other non-alphabet byte (a second BEGIN line
        # included) makes the strict decoder fail.
        body = b"".join(pem[pos + len(_BEGIN) : stop].split())
        try:
            der = binascii.a2b_base64(body, strict_mode=True)
        except binascii.Error as e:
            raise ValueError(f"PEM CERTIFICATE block is not strict base64: {e}") from e
        if not der:
            raise ValueError("PEM CERTIFICATE block is empty")
        ders.append(der)
        pos = stop + len(_END)
    if not ders:
        raise ValueError("PEM holds no certificate")
    return ders


def _element(der: bytes, off: int) -> tuple[int, int, int]:
    """(tag, offset of the contents, offset just past the element) of the DER element at ``off``."""
    if off + 2 > len(der):
        raise ValueError("truncated DER element")
    tag, first = der[off], der[off + 1]
    start = off + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 3 or start + n > len(der):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[start : start + n], "big")
        start += n
    if start + length > len(der):
        raise ValueError("DER length overruns its container")
    return tag, start, start + length


def _sequence_contents(der: bytes, off: int) -> tuple[int, int]:
    tag, start, end = _element(der, off)
    if tag != _SEQUENCE:
        raise ValueError("expected a DER SEQUENCE")
    return start, end


def signed_part(der: bytes) -> bytes:
    """The to-be-signed element (header included) of a certificate or a CRL: the bytes its issuer signed.

    Both are SEQUENCE { tbs, signatureAlgorithm, signatureValue }. Call only on DER that ``cryptography`` has
    already parsed (its parser is strict DER, with no trailing data): then the first element of the outer
    SEQUENCE is byte for byte what ``tbs_certificate_bytes`` / ``tbs_certlist_bytes`` would re-encode.
    """
    contents, end = _sequence_contents(der, 0)
    if end != len(der):
        raise ValueError("trailing bytes after the signed object")
    _, tbs_end = _sequence_contents(der, contents)
    return der[contents:tbs_end]


def certificate_names(tbs: bytes) -> tuple[bytes, bytes]:
    """(issuer, subject) of a TBSCertificate, each the DER of its Name.

    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity, subject,
    ... }. Issuer and subject are compared as these exact bytes, as webpki does (RFC 5280 §7.1 allows
    smarter matching; a chain whose names differ in encoding only is refused, which is fail-closed).
    """
    off, _ = _sequence_contents(tbs, 0)
    if off < len(tbs) and tbs[off] == _VERSION:
        off = _element(tbs, off)[2]
    serial_end = _element(tbs, off)[2]
    algorithm_end = _element(tbs, serial_end)[2]
    issuer_end = _sequence_contents(tbs, algorithm_end)[1]
    validity_end = _sequence_contents(tbs, issuer_end)[1]
    subject_end = _sequence_contents(tbs, validity_end)[1]
    return tbs[algorithm_end:issuer_end], tbs[validity_end:subject_end]


def crl_issuer(tbs: bytes) -> bytes:
    """The DER of the issuer Name of a TBSCertList (:func:`signed_part` of a CRL).

    TBSCertList ::= SEQUENCE { version INTEGER OPTIONAL, signature, issuer, thisUpdate, ... }.
    """
    off, _ = _sequence_contents(tbs, 0)
    if off < len(tbs) and tbs[off] == _INTEGER:
        off = _element(tbs, off)[2]
    algorithm_end = _element(tbs, off)[2]
    return tbs[algorithm_end : _sequence_contents(tbs, algorithm_end)[1]]
