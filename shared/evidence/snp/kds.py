"""AMD KDS vocabulary: product lines, TCB_VERSION layouts, and the VCEK/VLEK certificate extensions.

The TCB_VERSION layout depends on the product (AMD SEV-SNP ABI spec 56860, TCB_VERSION): Milan and Genoa put
BOOT_LOADER, TEE, SNP and MICROCODE SPLs in bytes 0, 1, 6, 7 (bytes 2..5 are KDS's spl_4..spl_7); Turin puts
FMC, BOOT_LOADER, TEE, SNP in bytes 0..3, MICROCODE in byte 7, and reserves 4..6. Decoding a Turin TCB with
the Milan layout is silently wrong, so every TCB decode here takes the product.

The VCEK extensions (KDS spec 57230, OIDs 1.3.6.1.4.1.3704.1.*) are unrecognised by ``cryptography`` and
arrive as raw extnValue bytes: DER INTEGER / IA5String, except hwID, which is the raw chip id.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec
from cryptography import x509

from contrast.errors import EvidenceError

Product = Literal["Milan", "Genoa", "Turin"]
PRODUCTS: tuple[Product, ...] = get_args(Product)

_OID = "1.3.6.1.4.1.3704.1."
OID_STRUCT_VERSION = x509.ObjectIdentifier(_OID + "1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(_OID + "2")
OID_BL_SPL = x509.ObjectIdentifier(_OID + "3.1")
OID_TEE_SPL = x509.ObjectIdentifier(_OID + "3.2")
OID_SNP_SPL = x509.ObjectIdentifier(_OID + "3.3")
OID_SPL_4 = x509.ObjectIdentifier(_OID + "3.4")
OID_SPL_5 = x509.ObjectIdentifier(_OID + "3.5")
OID_SPL_6 = x509.ObjectIdentifier(_OID + "3.6")
OID_SPL_7 = x509.ObjectIdentifier(_OID + "3.7")
OID_UCODE_SPL = x509.ObjectIdentifier(_OID + "3.8")
OID_FMC_SPL = x509.ObjectIdentifier(_OID + "3.9")
OID_HWID = x509.ObjectIdentifier(_OID + "4")
OID_CSP_ID = x509.ObjectIdentifier(_OID + "5")

TURIN_CHIP_ID_SIZE = 8  # Turin's hwID and meaningful CHIP_ID prefix


def product_from_cpuid(family: int, model: int) -> Product | None:
    """The product line named by the v3+ CPUID bytes, or None if unknown."""
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return "Genoa"
        return None
    if family == 0x1A and model <= 0x11:
        return "Turin"
    return None


def product_from_name(name: str) -> Product | None:
    """Map a productName extension (``Milan-B0``, ``Genoa``, ``Turin``) or CN suffix to a product line."""
    base = name.split("-", 1)[0]
    for p in PRODUCTS:
        if base == p:
            return p
    return None


class Tcb(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A TCB_VERSION decoded with its product's layout. ``fmc`` is None for Milan/Genoa.

    ``spl4..spl7`` are Milan/Genoa bytes 2..5 (zero in practice); for Turin ``reserved`` holds bytes 4..6.
    """

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None
    reserved: bytes = b""

    def as_dict(self) -> dict[str, int]:
        d = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}
        if self.fmc is not None:
            d["fmc"] = self.fmc
        return d


def decode_tcb(raw: int, product: Product) -> Tcb:
    b = raw.to_bytes(8, "little")
    if product == "Turin":
        return Tcb(fmc=b[0], bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7], reserved=b[4:7])
    return Tcb(bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7], reserved=b[2:6])


def encode_tcb(tcb: Tcb, product: Product) -> int:
    """Inverse of :func:`decode_tcb`. Raises ValueError on a component that does not fit the layout."""
    parts = (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc or 0)
    if any(not 0 <= p <= 0xFF for p in parts):
        raise ValueError("TCB components are single bytes")
    if product == "Turin":
        if tcb.fmc is None:
            raise ValueError("a Turin TCB has an FMC component")
        reserved = tcb.reserved or bytes(3)
        if len(reserved) != 3:
            raise ValueError("a Turin TCB has 3 reserved bytes")
        b = bytes([tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp]) + reserved + bytes([tcb.microcode])
    else:
        if tcb.fmc is not None:
            raise ValueError(f"a {product} TCB has no FMC component")
        reserved = tcb.reserved or bytes(4)
        if len(reserved) != 4:
            raise ValueError(f"a {product} TCB has 4 spl_4..spl_7 bytes")
        b = bytes([tcb.bootloader, tcb.tee]) + reserved + bytes([tcb.snp, tcb.microcode])
    return int.from_bytes(b, "little")


# --- minimal strict DER for the extension values ------------------------------------------------------------
def _der_tlv(data: bytes, tag: int, what: str) -> bytes:
    if len(data) < 2 or data[0] != tag:
        raise EvidenceError("bad_vcek", f"VCEK extension {what}: expected DER tag 0x{tag:02x}")
    length = data[1]
    body = data[2:]
    if length & 0x80:  # long form, one or two length bytes are plenty for these values
        n = length & 0x7F
        if n not in (1, 2) or len(data) < 2 + n:
            raise EvidenceError("bad_vcek", f"VCEK extension {what}: bad DER length")
        length = int.from_bytes(data[2 : 2 + n], "big")
        if length < 0x80 or (n == 2 and length < 0x100):
            raise EvidenceError("bad_vcek", f"VCEK extension {what}: non-minimal DER length")
        body = data[2 + n :]
    if len(body) != length:
        raise EvidenceError("bad_vcek", f"VCEK extension {what}: DER length does not match the value")
    return body


def der_integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative")
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def der_ia5(text: str) -> bytes:
    body = text.encode("ascii")
    if len(body) >= 0x80:
        raise ValueError("too long for this encoder")
    return bytes([0x16, len(body)]) + body


def parse_der_integer(data: bytes, what: str) -> int:
    body = _der_tlv(data, 0x02, what)
    if not body or body[0] & 0x80:
        raise EvidenceError("bad_vcek", f"VCEK extension {what}: not a non-negative INTEGER")
    if len(body) > 1 and body[0] == 0 and not body[1] & 0x80:
        raise EvidenceError("bad_vcek", f"VCEK extension {what}: non-minimal INTEGER")
    return int.from_bytes(body, "big")


def parse_der_ia5(data: bytes, what: str) -> str:
    body = _der_tlv(data, 0x16, what)
    if any(c > 0x7F for c in body):
        raise EvidenceError("bad_vcek", f"VCEK extension {what}: not IA5")
    return body.decode("ascii")


class VekExtensions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The AMD extensions of a VCEK or VLEK certificate."""

    struct_version: int | None
    product_name: str
    bl_spl: int
    tee_spl: int
    snp_spl: int
    ucode_spl: int
    spl_4: int | None
    spl_5: int | None
    spl_6: int | None
    spl_7: int | None
    fmc_spl: int | None
    hwid: bytes | None  # absent in a VLEK
    csp_id: str | None  # VLEK only

    def tcb(self, product: Product) -> Tcb:
        """The TCB these extensions certify, in ``product``'s layout; raises on an impossible component."""
        if product == "Turin":
            if self.fmc_spl is None:
                raise EvidenceError("bad_vcek", "Turin VCEK lacks the fmcSPL extension")
            if any(v for v in (self.spl_4, self.spl_5, self.spl_6, self.spl_7)):
                raise EvidenceError("bad_vcek", "Turin VCEK has non-zero spl_4..spl_7")
            return Tcb(
                fmc=self.fmc_spl,
                bootloader=self.bl_spl,
                tee=self.tee_spl,
                snp=self.snp_spl,
                microcode=self.ucode_spl,
                reserved=bytes(3),
            )
        if self.fmc_spl is not None:
            raise EvidenceError("bad_vcek", f"{product} VCEK carries an fmcSPL extension")
        spl = tuple(v or 0 for v in (self.spl_4, self.spl_5, self.spl_6, self.spl_7))
        if any(v > 0xFF for v in spl):
            raise EvidenceError("bad_vcek", "VCEK spl_4..spl_7 out of range")
        return Tcb(
            bootloader=self.bl_spl,
            tee=self.tee_spl,
            snp=self.snp_spl,
            microcode=self.ucode_spl,
            reserved=bytes(spl),
        )


def _ext_raw(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise EvidenceError("bad_vcek", f"VCEK extension {oid.dotted_string} has an unexpected type")
    return value.value


def _spl(cert: x509.Certificate, oid: x509.ObjectIdentifier, name: str, *, required: bool) -> int | None:
    raw = _ext_raw(cert, oid)
    if raw is None:
        if required:
            raise EvidenceError("bad_vcek", f"VCEK lacks the {name} extension")
        return None
    v = parse_der_integer(raw, name)
    if v > 0xFF:
        raise EvidenceError("bad_vcek", f"VCEK extension {name} = {v} does not fit a TCB byte")
    return v


def parse_vek_extensions(cert: x509.Certificate) -> VekExtensions:
    """Read the AMD extensions of a VCEK/VLEK. Raises ``evidence.bad_vcek`` on a missing or malformed one."""
    raw_name = _ext_raw(cert, OID_PRODUCT_NAME)
    if raw_name is None:
        raise EvidenceError("bad_vcek", "VCEK lacks the productName extension")
    raw_sv = _ext_raw(cert, OID_STRUCT_VERSION)
    raw_csp = _ext_raw(cert, OID_CSP_ID)
    hwid = _ext_raw(cert, OID_HWID)
    return VekExtensions(
        struct_version=parse_der_integer(raw_sv, "structVersion") if raw_sv is not None else None,
        product_name=parse_der_ia5(raw_name, "productName"),
        bl_spl=_spl(cert, OID_BL_SPL, "blSPL", required=True) or 0,
        tee_spl=_spl(cert, OID_TEE_SPL, "teeSPL", required=True) or 0,
        snp_spl=_spl(cert, OID_SNP_SPL, "snpSPL", required=True) or 0,
        ucode_spl=_spl(cert, OID_UCODE_SPL, "ucodeSPL", required=True) or 0,
        spl_4=_spl(cert, OID_SPL_4, "spl_4", required=False),
        spl_5=_spl(cert, OID_SPL_5, "spl_5", required=False),
        spl_6=_spl(cert, OID_SPL_6, "spl_6", required=False),
        spl_7=_spl(cert, OID_SPL_7, "spl_7", required=False),
        fmc_spl=_spl(cert, OID_FMC_SPL, "fmcSPL", required=False),
        hwid=hwid,
        csp_id=parse_der_ia5(raw_csp, "cspID") if raw_csp is not None else None,
    )


def vcek_extensions(
    product: Product, tcb: Tcb, hwid: bytes | None, *, csp_id: str | None = None
) -> list[x509.UnrecognizedExtension]:
    """The extensions KDS puts into a VCEK (hwid) or VLEK (csp_id) for ``product`` at ``tcb`` (emulator)."""
    turin = product == "Turin"
    exts = [
        (OID_STRUCT_VERSION, der_integer(1 if turin else 0)),
        (OID_PRODUCT_NAME, der_ia5("Milan-B0" if product == "Milan" else product)),
        (OID_BL_SPL, der_integer(tcb.bootloader)),
        (OID_TEE_SPL, der_integer(tcb.tee)),
        (OID_SNP_SPL, der_integer(tcb.snp)),
    ]
    if not turin:
        spl = tcb.reserved or bytes(4)
        exts.append((OID_SPL_4, der_integer(spl[0])))
    spl_tail = bytes(3) if turin else (tcb.reserved or bytes(4))[1:]
    exts += [
        (OID_SPL_5, der_integer(spl_tail[0])),
        (OID_SPL_6, der_integer(spl_tail[1])),
        (OID_SPL_7, der_integer(spl_tail[2])),
        (OID_UCODE_SPL, der_integer(tcb.microcode)),
    ]
    if turin:
        exts.append((OID_FMC_SPL, der_integer(tcb.fmc or 0)))
    if hwid is not None:
        exts.append((OID_HWID, hwid))
    if csp_id is not None:
        exts.append((OID_CSP_ID, der_ia5(csp_id)))
    return [x509.UnrecognizedExtension(oid, value) for oid, value in exts]
