"""SGX PCK certificate extensions (OID 1.2.840.113741.1.13.1), read with a minimal strict DER reader.

``cryptography`` hands us the extension's raw DER value; the layout (Intel's PCK certificate profile) is a
SEQUENCE of {OID, value} pairs, where TCB is itself a SEQUENCE of {OID, value}. The reader accepts definite
lengths only, refuses overruns and trailing bytes, and requires each mandatory item exactly once. The same
module encodes the extension for the emulator, so both directions share one set of OIDs."""

from __future__ import annotations

import functools
from typing import Final

import msgspec
from cryptography import x509

from contrast.errors import EvidenceError

SGX_EXTENSIONS_OID: Final = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_BASE: Final = "1.2.840.113741.1.13.1"
OID_PPID: Final = _BASE + ".1"
OID_TCB: Final = _BASE + ".2"
OID_PCEID: Final = _BASE + ".3"
OID_FMSPC: Final = _BASE + ".4"
OID_SGX_TYPE: Final = _BASE + ".5"
OID_PIID: Final = _BASE + ".6"
OID_CONFIGURATION: Final = _BASE + ".7"
OID_PCESVN: Final = OID_TCB + ".17"
OID_CPUSVN: Final = OID_TCB + ".18"

SGX_TYPES: Final = {0: "Standard", 1: "Scalable", 2: "ScalableWithIntegrity"}
# (OID, label) of the 16 TCB component SVNs, built once: the parser runs on every uncached verification.
_TCB_COMPONENTS: Final = tuple((f"{OID_TCB}.{i}", f"TCB comp {i}") for i in range(1, 17))

_SEQUENCE, _OID, _OCTETS, _INTEGER, _ENUMERATED, _BOOLEAN = 0x30, 0x06, 0x04, 0x02, 0x0A, 0x01


class PckExtensions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ppid: bytes
    tcb_comp_svns: tuple[int, ...]  # 16 SGX TCB component SVNs
    pcesvn: int
    cpusvn: bytes
    pceid: bytes  # 2 bytes
    fmspc: bytes  # 6 bytes
    sgx_type: int
    piid: bytes | None = None  # PlatformInstanceID, Platform-CA-issued certs only


def _bad(msg: str) -> EvidenceError:
    return EvidenceError("bad_pck_extensions", msg)


def _read_tlv(buf: bytes, off: int) -> tuple[int, bytes, int]:
    """Return (tag, contents, next offset) for the DER element at ``off``."""
    if off + 2 > len(buf):
        raise _bad("truncated DER element")
    tag = buf[off]
    first = buf[off + 1]
    off += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or off + n > len(buf):
            raise _bad("unsupported or truncated DER length")
        length = int.from_bytes(buf[off : off + n], "big")
        if length < 0x80 or buf[off] == 0:
            raise _bad("non-minimal DER length")
        off += n
    if off + length > len(buf):
        raise _bad("DER length overruns the extension")
    return tag, buf[off : off + length], off + length


@functools.lru_cache(maxsize=256)
def _decode_oid(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise _bad("malformed OID")
    arcs: list[int] = []
    value = 0
    for b in body:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def _pairs(seq_body: bytes) -> dict[str, tuple[int, bytes]]:
    """SEQUENCE OF SEQUENCE {OID, value} → {dotted OID: (tag, value)}. Known OIDs are matched on their DER
    bytes (no decoding on the hot path); an unknown one is decoded, and is kept but never read."""
    out: dict[str, tuple[int, bytes]] = {}
    off, end = 0, len(seq_body)
    while off < end:
        tag, pair, off = _read_tlv(seq_body, off)
        if tag != _SEQUENCE:
            raise _bad("extension entry is not a SEQUENCE")
        oid_tag, oid_raw, mid = _read_tlv(pair, 0)
        if oid_tag != _OID:
            raise _bad("extension entry does not start with an OID")
        value_tag, value, stop = _read_tlv(pair, mid)
        if stop != len(pair):
            raise _bad("extension entry is not {OID, value}")
        oid = _KNOWN_OIDS.get(oid_raw) or _decode_oid(oid_raw)
        if oid in out:
            raise _bad(f"duplicate extension entry {oid}")
        out[oid] = (value_tag, value)
    return out


def _int(tv: tuple[int, bytes], tag: int, what: str) -> int:
    t, v = tv
    if t != tag or not v or (len(v) > 1 and v[0] == 0 and v[1] < 0x80) or v[0] & 0x80:
        raise _bad(f"{what} is not a non-negative DER integer")
    return int.from_bytes(v, "big")


def _octets(tv: tuple[int, bytes], size: int, what: str) -> bytes:
    t, v = tv
    if t != _OCTETS or len(v) != size:
        raise _bad(f"{what} must be an OCTET STRING of {size} bytes")
    return v


def _need(d: dict[str, tuple[int, bytes]], oid: str, what: str) -> tuple[int, bytes]:
    if oid not in d:
        raise _bad(f"PCK certificate lacks {what} ({oid})")
    return d[oid]


def parse_sgx_extensions(der: bytes) -> PckExtensions:
    """Parse the raw DER value of the SGX extension."""
    tag, body, end = _read_tlv(der, 0)
    if tag != _SEQUENCE or end != len(der):
        raise _bad("SGX extension is not a single SEQUENCE")
    top = _pairs(body)
    tcb_tag, tcb_body = _need(top, OID_TCB, "TCB")
    if tcb_tag != _SEQUENCE:
        raise _bad("TCB is not a SEQUENCE")
    tcb = _pairs(tcb_body)
    comps = tuple(_int(_need(tcb, oid, what), _INTEGER, what) for oid, what in _TCB_COMPONENTS)
    if any(c > 255 for c in comps):
        raise _bad("TCB component SVN out of range")
    pcesvn = _int(_need(tcb, OID_PCESVN, "PCESVN"), _INTEGER, "PCESVN")
    if pcesvn > 0xFFFF:
        raise _bad("PCESVN out of range")
    sgx_type = _int(_need(top, OID_SGX_TYPE, "SGX type"), _ENUMERATED, "SGX type")
    if sgx_type not in SGX_TYPES:
        raise _bad(f"unknown SGX type {sgx_type}")
    piid = _octets(top[OID_PIID], 16, "PlatformInstanceID") if OID_PIID in top else None
    return PckExtensions(
        ppid=_octets(_need(top, OID_PPID, "PPID"), 16, "PPID"),
        tcb_comp_svns=comps,
        pcesvn=pcesvn,
        cpusvn=_octets(_need(tcb, OID_CPUSVN, "CPUSVN"), 16, "CPUSVN"),
        pceid=_octets(_need(top, OID_PCEID, "PCE-ID"), 2, "PCE-ID"),
        fmspc=_octets(_need(top, OID_FMSPC, "FMSPC"), 6, "FMSPC"),
        sgx_type=sgx_type,
        piid=piid,
    )


def pck_extensions(cert: x509.Certificate) -> PckExtensions:
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSIONS_OID)
    except x509.ExtensionNotFound as e:
        raise _bad("PCK certificate has no SGX extension") from e
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as e:
        raise _bad(f"PCK certificate extensions do not decode: {e}") from e
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise _bad("SGX extension decoded to an unexpected type")
    return parse_sgx_extensions(value.value)


# --- encoding (emulator) -----------------------------------------------------------------------------------


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    lb = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(lb)]) + lb + body


def _enc_oid(oid: str) -> bytes:
    arcs = [int(a) for a in oid.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(_OID, bytes(out))


def _enc_int(tag: int, v: int) -> bytes:
    return _tlv(tag, v.to_bytes(v.bit_length() // 8 + 1, "big"))


def encode_sgx_extensions(ext: PckExtensions) -> bytes:
    """DER-encode the SGX extension value (used by the emulator)."""

    def pair(oid: str, value: bytes) -> bytes:
        return _tlv(_SEQUENCE, _enc_oid(oid) + value)

    tcb = b"".join(pair(f"{OID_TCB}.{i + 1}", _enc_int(_INTEGER, c)) for i, c in enumerate(ext.tcb_comp_svns))
    tcb += pair(OID_PCESVN, _enc_int(_INTEGER, ext.pcesvn)) + pair(OID_CPUSVN, _tlv(_OCTETS, ext.cpusvn))
    body = (
        pair(OID_PPID, _tlv(_OCTETS, ext.ppid))
        + pair(OID_TCB, _tlv(_SEQUENCE, tcb))
        + pair(OID_PCEID, _tlv(_OCTETS, ext.pceid))
        + pair(OID_FMSPC, _tlv(_OCTETS, ext.fmspc))
        + pair(OID_SGX_TYPE, _enc_int(_ENUMERATED, ext.sgx_type))
    )
    if ext.piid is not None:
        body += pair(OID_PIID, _tlv(_OCTETS, ext.piid))
    return _tlv(_SEQUENCE, body)


_KNOWN_OIDS: Final = {
    _enc_oid(oid)[2:]: oid
    for oid in (
        OID_PPID,
        OID_TCB,
        OID_PCEID,
        OID_FMSPC,
        OID_SGX_TYPE,
        OID_PIID,
        OID_CONFIGURATION,
        *(f"{OID_TCB}.{i}" for i in range(1, 19)),
    )
}
