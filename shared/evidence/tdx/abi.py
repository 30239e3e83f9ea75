"""Intel TDX DCAP quote v4/v5 (ECDSA P-256) as bytes ↔ frozen structs, by declared lengths only.

Layouts follow Intel's ``sgx_quote_4.h`` / ``sgx_quote_5.h``. Every length read from the
quote is checked against what is left of the buffer before it is used; an overrun is ``evidence.malformed``.
Bytes after ``signature_data_len`` are ignored: real quote files carry padding or test strings there (§2.7).
``to_bytes()`` rebuilds the parsed prefix exactly.

This module makes no cryptographic decision. It does refuse what we cannot lay out or verify: another
version (``evidence.unsupported_version``), another attestation key type or TEE type, an SGX body, or
certification data other than type 6 carrying type 5 (``evidence.unsupported_format``).
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

from contrast.errors import EvidenceError

# --- header (48 bytes) -------------------------------------------------------------------------------------
HEADER_SIZE: Final = 48
OFF_VERSION: Final = 0
OFF_ATT_KEY_TYPE: Final = 2
OFF_TEE_TYPE: Final = 4
OFF_RESERVED: Final = 8
OFF_QE_VENDOR_ID: Final = 12
OFF_USER_DATA: Final = 28

ATT_KEY_TYPE_ECDSA_P256: Final = 2
TEE_TYPE_TDX: Final = 0x81
INTEL_QE_VENDOR_ID: Final = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# --- body --------------------------------------------------------------------------------------------------
BODY_TYPE_SGX: Final = 1
BODY_TYPE_TDX10: Final = 2
BODY_TYPE_TDX15: Final = 3
TD_REPORT10_SIZE: Final = 584
TD_REPORT15_SIZE: Final = 648
BODY_SIZES: Final = {BODY_TYPE_TDX10: TD_REPORT10_SIZE, BODY_TYPE_TDX15: TD_REPORT15_SIZE}
V5_BODY_DESCRIPTOR_SIZE: Final = 6  # u16 body_type + u32 body_size

# TD report body offsets, relative to the body start: (offset, size)
TD_TEE_TCB_SVN: Final = (0, 16)
TD_MR_SEAM: Final = (16, 48)
TD_MR_SIGNER_SEAM: Final = (64, 48)
TD_SEAM_ATTRIBUTES: Final = (112, 8)
TD_ATTRIBUTES: Final = (120, 8)
TD_XFAM: Final = (128, 8)
TD_MR_TD: Final = (136, 48)
TD_MR_CONFIG_ID: Final = (184, 48)
TD_MR_OWNER: Final = (232, 48)
TD_MR_OWNER_CONFIG: Final = (280, 48)
TD_RTMR0: Final = (328, 48)
TD_REPORT_DATA: Final = (520, 64)
TD_TEE_TCB_SVN2: Final = (584, 16)
TD_MR_SERVICE_TD: Final = (600, 48)

TD_ATTR_DEBUG: Final = 1 << 0

# --- signature data ----------------------------------------------------------------------------------------
SIG_SIZE: Final = 64
ATT_KEY_SIZE: Final = 64
CERT_TYPE_PCK_CHAIN: Final = 5
CERT_TYPE_QE_REPORT: Final = 6
QE_REPORT_SIZE: Final = 384
# Signature data must hold at least sig ‖ key ‖ type ‖ size; cert data at least report ‖ sig ‖ auth size.
_SIGDATA_FIXED: Final = SIG_SIZE + ATT_KEY_SIZE + 2 + 4
_QE_CERT_FIXED: Final = QE_REPORT_SIZE + SIG_SIZE + 2

# SGX report body (QE report) offsets
QE_CPU_SVN: Final = (0, 16)
QE_MISCSELECT: Final = (16, 4)
QE_ATTRIBUTES: Final = (48, 16)
QE_MR_ENCLAVE: Final = (64, 32)
QE_MR_SIGNER: Final = (128, 32)
QE_ISV_PROD_ID: Final = (256, 2)
QE_ISV_SVN: Final = (258, 2)
QE_REPORT_DATA: Final = (320, 64)

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


def _malformed(msg: str) -> EvidenceError:
    return EvidenceError("malformed", msg)


def _field(buf: bytes, spec: tuple[int, int]) -> bytes:
    off, size = spec
    return buf[off : off + size]


class Header(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int
    att_key_type: int
    tee_type: int
    reserved: bytes  # 4
    qe_vendor_id: bytes  # 16
    user_data: bytes  # 20

    def to_bytes(self) -> bytes:
        return (
            struct.pack("<HHI", self.version, self.att_key_type, self.tee_type)
            + self.reserved
            + self.qe_vendor_id
            + self.user_data
        )


class TdReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A TD report body: TDX 1.0 (584 bytes) or TDX 1.5 (648 bytes, with TEE_TCB_SVN2 and MRSERVICETD)."""

    raw: bytes

    @property
    def is_tdx15(self) -> bool:
        return len(self.raw) == TD_REPORT15_SIZE

    @property
    def tee_tcb_svn(self) -> bytes:
        return _field(self.raw, TD_TEE_TCB_SVN)

    @property
    def mr_seam(self) -> bytes:
        return _field(self.raw, TD_MR_SEAM)

    @property
    def mr_signer_seam(self) -> bytes:
        return _field(self.raw, TD_MR_SIGNER_SEAM)

    @property
    def seam_attributes(self) -> bytes:
        return _field(self.raw, TD_SEAM_ATTRIBUTES)

    @property
    def td_attributes(self) -> bytes:
        return _field(self.raw, TD_ATTRIBUTES)

    @property
    def debug(self) -> bool:
        return bool(int.from_bytes(self.td_attributes, "little") & TD_ATTR_DEBUG)

    @property
    def xfam(self) -> bytes:
        return _field(self.raw, TD_XFAM)

    @property
    def mr_td(self) -> bytes:
        return _field(self.raw, TD_MR_TD)

    @property
    def mr_config_id(self) -> bytes:
        return _field(self.raw, TD_MR_CONFIG_ID)

    @property
    def mr_owner(self) -> bytes:
        return _field(self.raw, TD_MR_OWNER)

    @property
    def mr_owner_config(self) -> bytes:
        return _field(self.raw, TD_MR_OWNER_CONFIG)

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        off = TD_RTMR0[0]
        r = self.raw
        return (r[off : off + 48], r[off + 48 : off + 96], r[off + 96 : off + 144], r[off + 144 : off + 192])

    @property
    def report_data(self) -> bytes:
        return _field(self.raw, TD_REPORT_DATA)

    @property
    def tee_tcb_svn2(self) -> bytes | None:
        return _field(self.raw, TD_TEE_TCB_SVN2) if self.is_tdx15 else None

    @property
    def mr_service_td(self) -> bytes | None:
        return _field(self.raw, TD_MR_SERVICE_TD) if self.is_tdx15 else None


class QeReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The quoting enclave's SGX report body (384 bytes)."""

    raw: bytes

    @property
    def cpu_svn(self) -> bytes:
        return _field(self.raw, QE_CPU_SVN)

    @property
    def miscselect(self) -> int:
        return int.from_bytes(_field(self.raw, QE_MISCSELECT), "little")

    @property
    def attributes(self) -> bytes:
        return _field(self.raw, QE_ATTRIBUTES)

    @property
    def mr_enclave(self) -> bytes:
        return _field(self.raw, QE_MR_ENCLAVE)

    @property
    def mr_signer(self) -> bytes:
        return _field(self.raw, QE_MR_SIGNER)

    @property
    def isv_prod_id(self) -> int:
        return int.from_bytes(_field(self.raw, QE_ISV_PROD_ID), "little")

    @property
    def isv_svn(self) -> int:
        return int.from_bytes(_field(self.raw, QE_ISV_SVN), "little")

    @property
    def report_data(self) -> bytes:
        return _field(self.raw, QE_REPORT_DATA)


class QeCertificationData(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Certification data type 6: QE report, its signature by the PCK key, QE auth data, type-5 PCK chain."""

    qe_report: QeReport
    qe_report_signature: bytes  # r ‖ s, big-endian
    qe_auth_data: bytes
    pck_chain_type: int  # always CERT_TYPE_PCK_CHAIN once parsed
    pck_chain_raw: bytes  # PEM as transmitted, trailing NULs included

    def to_bytes(self) -> bytes:
        return (
            self.qe_report.raw
            + self.qe_report_signature
            + _U16.pack(len(self.qe_auth_data))
            + self.qe_auth_data
            + _U16.pack(self.pck_chain_type)
            + _U32.pack(len(self.pck_chain_raw))
            + self.pck_chain_raw
        )

    @property
    def pck_chain_pem(self) -> bytes:
        """The PEM chain with the NUL terminator most quotes carry removed."""
        return self.pck_chain_raw.rstrip(b"\x00")


class SignatureData(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    signature: bytes  # r ‖ s, big-endian, over header ‖ body
    attestation_key: bytes  # x ‖ y, big-endian, no 0x04 prefix
    cert_data_type: int
    cert_data: QeCertificationData

    def to_bytes(self) -> bytes:
        cd = self.cert_data.to_bytes()
        return (
            self.signature + self.attestation_key + _U16.pack(self.cert_data_type) + _U32.pack(len(cd)) + cd
        )


class Quote(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A parsed TDX quote. ``signed_region`` is exactly the bytes the attestation key signed."""

    header: Header
    body_type: int  # v4: always BODY_TYPE_TDX10 (implicit); v5: as declared
    body: TdReport
    signature_data: SignatureData
    trailing: int  # bytes after the declared signature data (ignored, reported)

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def signed_region(self) -> bytes:
        head = self.header.to_bytes()
        if self.header.version == 5:
            head += _U16.pack(self.body_type) + _U32.pack(len(self.body.raw))
        return head + self.body.raw

    def to_bytes(self) -> bytes:
        sd = self.signature_data.to_bytes()
        return self.signed_region + _U32.pack(len(sd)) + sd


def _take(buf: bytes, off: int, n: int, what: str) -> bytes:
    if n < 0 or off + n > len(buf):
        raise _malformed(f"{what}: needs {n} bytes at offset {off}, buffer has {max(len(buf) - off, 0)}")
    return buf[off : off + n]


def parse_header(buf: bytes) -> Header:
    raw = _take(buf, 0, HEADER_SIZE, "header")
    version, akt, tee = struct.unpack_from("<HHI", raw, 0)
    if version not in (4, 5):
        raise EvidenceError("unsupported_version", f"quote version {version} (only 4 and 5 are supported)")
    if akt != ATT_KEY_TYPE_ECDSA_P256:
        raise EvidenceError("unsupported_format", f"attestation key type {akt} (only 2 = ECDSA P-256)")
    if tee != TEE_TYPE_TDX:
        raise EvidenceError("unsupported_format", f"TEE type {tee:#x} is not TDX (0x81)")
    qe_vendor = raw[OFF_QE_VENDOR_ID : OFF_QE_VENDOR_ID + 16]
    if qe_vendor != INTEL_QE_VENDOR_ID:
        raise EvidenceError("unsupported_format", f"QE vendor id {qe_vendor.hex()} is not Intel's")
    return Header(
        version=version,
        att_key_type=akt,
        tee_type=tee,
        reserved=raw[OFF_RESERVED : OFF_RESERVED + 4],
        qe_vendor_id=qe_vendor,
        user_data=raw[OFF_USER_DATA:HEADER_SIZE],
    )


def _parse_qe_cert_data(cd: bytes) -> QeCertificationData:
    if len(cd) < _QE_CERT_FIXED:
        raise _malformed(f"QE certification data is {len(cd)} bytes, needs at least {_QE_CERT_FIXED}")
    qe_report = QeReport(raw=cd[:QE_REPORT_SIZE])
    qe_sig = cd[QE_REPORT_SIZE : QE_REPORT_SIZE + SIG_SIZE]
    off = QE_REPORT_SIZE + SIG_SIZE
    (auth_len,) = _U16.unpack_from(cd, off)
    off += 2
    auth = _take(cd, off, auth_len, "QE auth data")
    off += auth_len
    (inner_type,) = _U16.unpack(_take(cd, off, 2, "inner certification data type"))
    off += 2
    if inner_type != CERT_TYPE_PCK_CHAIN:
        raise EvidenceError(
            "unsupported_format", f"inner certification data type {inner_type} (only 5 = PCK chain)"
        )
    (inner_len,) = _U32.unpack(_take(cd, off, 4, "inner certification data size"))
    off += 4
    chain = _take(cd, off, inner_len, "PCK certificate chain")
    off += inner_len
    if off != len(cd):
        raise _malformed(f"QE certification data has {len(cd) - off} bytes after the PCK chain")
    return QeCertificationData(
        qe_report=qe_report,
        qe_report_signature=qe_sig,
        qe_auth_data=auth,
        pck_chain_type=inner_type,
        pck_chain_raw=chain,
    )


def _parse_signature_data(sd: bytes) -> SignatureData:
    if len(sd) < _SIGDATA_FIXED:
        raise _malformed(f"signature data is {len(sd)} bytes, needs at least {_SIGDATA_FIXED}")
    sig = sd[:SIG_SIZE]
    key = sd[SIG_SIZE : SIG_SIZE + ATT_KEY_SIZE]
    cd_type, cd_len = struct.unpack_from("<HI", sd, SIG_SIZE + ATT_KEY_SIZE)
    if cd_type != CERT_TYPE_QE_REPORT:
        raise EvidenceError(
            "unsupported_format", f"certification data type {cd_type} (only 6 = QE report certification)"
        )
    cd = _take(sd, _SIGDATA_FIXED, cd_len, "certification data")
    if _SIGDATA_FIXED + cd_len != len(sd):
        raise _malformed(
            f"signature data has {len(sd) - _SIGDATA_FIXED - cd_len} bytes after certification data"
        )
    return SignatureData(
        signature=sig, attestation_key=key, cert_data_type=cd_type, cert_data=_parse_qe_cert_data(cd)
    )


def parse_quote(buf: bytes) -> Quote:
    """Parse a TDX quote v4 or v5. Raises :class:`EvidenceError` on anything it cannot lay out exactly."""
    buf = bytes(buf)
    header = parse_header(buf)
    off = HEADER_SIZE
    if header.version == 4:
        body_type, body_size = BODY_TYPE_TDX10, TD_REPORT10_SIZE
    else:
        body_type, body_size = struct.unpack(
            "<HI", _take(buf, off, V5_BODY_DESCRIPTOR_SIZE, "v5 body descriptor")
        )
        off += V5_BODY_DESCRIPTOR_SIZE
        if body_type == BODY_TYPE_SGX or body_type not in BODY_SIZES:
            raise EvidenceError(
                "unsupported_format", f"quote v5 body type {body_type} is not a TD report (2, 3)"
            )
        if body_size != BODY_SIZES[body_type]:
            raise _malformed(
                f"body type {body_type} must be {BODY_SIZES[body_type]} bytes, declares {body_size}"
            )
    body = TdReport(raw=_take(buf, off, body_size, "TD report body"))
    off += body_size
    (sd_len,) = _U32.unpack(_take(buf, off, 4, "signature data length"))
    off += 4
    sd = _parse_signature_data(_take(buf, off, sd_len, "signature data"))
    off += sd_len
    return Quote(header=header, body_type=body_type, body=body, signature_data=sd, trailing=len(buf) - off)


def looks_like_tdx_quote(buf: bytes) -> bool:
    """Cheap format sniffing for the CLI: version 4/5, ECDSA P-256 key, TEE type TDX."""
    if len(buf) < HEADER_SIZE:
        return False
    version, akt, tee = struct.unpack_from("<HHI", buf, 0)
    return version in (4, 5) and akt == ATT_KEY_TYPE_ECDSA_P256 and tee == TEE_TYPE_TDX
