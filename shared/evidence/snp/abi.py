"""AMD SEV-SNP ``ATTESTATION_REPORT``: exact bytes <-> a frozen, typed report. No trust decisions here.

Layout per AMD SEV-SNP ABI spec 56860 (ATTESTATION_REPORT). The parser is strict -- exact length, known
version, known signature algorithm and signing-key type, every must-be-zero range zero -- but makes no
policy decision: whether a version, a debug policy or a TCB is acceptable is for ``verify``/``validate``.
``SnpReport.to_bytes()`` rebuilds the input exactly, which is what proves the layout.

TCB values stay raw ``u64`` here because their layout depends on the product (Turin differs from
Milan/Genoa) and a v2 report does not say which product made it; ``kds.decode_tcb`` decodes them once the
product is established.
"""

from __future__ import annotations

import struct
from typing import Literal

import msgspec

from contrast.errors import EvidenceError

# --- Sizes and offsets (hex offsets, as in the ABI spec) ----------------------------------------------------
REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0  # the ECDSA signature covers report[0x000:0x2A0]

OFF_VERSION = 0x000
OFF_GUEST_SVN = 0x004
OFF_POLICY = 0x008
OFF_FAMILY_ID = 0x010
OFF_IMAGE_ID = 0x020
OFF_VMPL = 0x030
OFF_SIGNATURE_ALGO = 0x034
OFF_CURRENT_TCB = 0x038
OFF_PLATFORM_INFO = 0x040
OFF_SIGNER_INFO = 0x048
OFF_RESERVED_04C = 0x04C  # 4 bytes, must be zero
OFF_REPORT_DATA = 0x050
OFF_MEASUREMENT = 0x090
OFF_HOST_DATA = 0x0C0
OFF_ID_KEY_DIGEST = 0x0E0
OFF_AUTHOR_KEY_DIGEST = 0x110
OFF_REPORT_ID = 0x140
OFF_REPORT_ID_MA = 0x160
OFF_REPORTED_TCB = 0x180
OFF_CPUID_FAM_ID = 0x188  # v3+; reserved in v2
OFF_CPUID_MOD_ID = 0x189
OFF_CPUID_STEP = 0x18A
OFF_RESERVED_18B = 0x18B  # up to CHIP_ID, must be zero
OFF_CHIP_ID = 0x1A0
OFF_COMMITTED_TCB = 0x1E0
OFF_CURRENT_BUILD = 0x1E8
OFF_CURRENT_MINOR = 0x1E9
OFF_CURRENT_MAJOR = 0x1EA
OFF_RESERVED_1EB = 0x1EB
OFF_COMMITTED_BUILD = 0x1EC
OFF_COMMITTED_MINOR = 0x1ED
OFF_COMMITTED_MAJOR = 0x1EE
OFF_RESERVED_1EF = 0x1EF
OFF_LAUNCH_TCB = 0x1F0
OFF_LAUNCH_MIT_VECTOR = 0x1F8  # v5+; reserved before
OFF_CURRENT_MIT_VECTOR = 0x200  # v5+
OFF_RESERVED_208 = 0x208  # up to the signature
OFF_SIGNATURE_R = 0x2A0
OFF_SIGNATURE_S = 0x2E8
OFF_RESERVED_330 = 0x330  # after the signature, to the end
SIGNATURE_COMPONENT_SIZE = 72  # r and s each, little-endian, zero-extended
P384_COMPONENT_SIZE = 48  # the rest of each 72-byte component must be zero

FAMILY_ID_SIZE = IMAGE_ID_SIZE = 16
REPORT_DATA_SIZE = 64
MEASUREMENT_SIZE = 48
HOST_DATA_SIZE = 32
DIGEST_SIZE = 48
REPORT_ID_SIZE = 32
CHIP_ID_SIZE = 64

SUPPORTED_VERSIONS = frozenset({2, 3, 4, 5})
CPUID_MIN_VERSION = 3
MIT_VECTOR_MIN_VERSION = 5
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1

# --- Bit fields ---------------------------------------------------------------------------------------------
POLICY_ABI_MINOR_MASK = 0xFF
POLICY_ABI_MAJOR_SHIFT = 8
POLICY_SMT = 1 << 16
POLICY_RESERVED_ONE = 1 << 17  # the ABI requires this bit to be one
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20
POLICY_CXL_ALLOW = 1 << 21
POLICY_MEM_AES_256_XTS = 1 << 22
POLICY_RAPL_DIS = 1 << 23
POLICY_CIPHERTEXT_HIDING = 1 << 24
POLICY_PAGE_SWAP_DISABLE = 1 << 25
POLICY_RESERVED_MASK = ~((1 << 26) - 1) & 0xFFFF_FFFF_FFFF_FFFF

PLATFORM_SMT_EN = 1 << 0
PLATFORM_TSME_EN = 1 << 1
PLATFORM_ECC_EN = 1 << 2
PLATFORM_RAPL_DIS = 1 << 3
PLATFORM_CIPHERTEXT_HIDING_DRAM_EN = 1 << 4
PLATFORM_ALIAS_CHECK_COMPLETE = 1 << 5
# Bit 6 is reserved in go-sev-guest/virtee but set (0x67) by real Turin firmware; tinfoil calls it
# IOMMU_WRITE_SAFE. We decode it rather than reject real reports.
PLATFORM_IOMMU_WRITE_SAFE = 1 << 6
PLATFORM_SEV_TIO_EN = 1 << 7
PLATFORM_RESERVED_MASK = ~0xFF & 0xFFFF_FFFF_FFFF_FFFF

SIGNER_AUTHOR_KEY_EN = 1 << 0
SIGNER_MASK_CHIP_KEY = 1 << 1
SIGNER_SIGNING_KEY_SHIFT = 2
SIGNER_SIGNING_KEY_MASK = 0b111
SIGNER_RESERVED_MASK = ~0x1F & 0xFFFF_FFFF

SigningKey = Literal["VCEK", "VLEK", "NONE"]
_SIGNING_KEYS: dict[int, SigningKey] = {0: "VCEK", 1: "VLEK", 7: "NONE"}
_SIGNING_KEY_CODES: dict[SigningKey, int] = {v: k for k, v in _SIGNING_KEYS.items()}


def signing_key_of(signer_info: int) -> SigningKey:
    """The SIGNING_KEY field of a SIGNER_INFO word that ``parse_report`` accepted."""
    return _SIGNING_KEYS[(signer_info >> SIGNER_SIGNING_KEY_SHIFT) & SIGNER_SIGNING_KEY_MASK]


class GuestPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The decoded POLICY bits (ABI §"Guest Policy")."""

    abi_minor: int
    abi_major: int
    smt: bool
    migrate_ma: bool
    debug: bool
    single_socket: bool
    cxl_allow: bool
    mem_aes_256_xts: bool
    rapl_dis: bool
    ciphertext_hiding: bool
    page_swap_disable: bool

    @classmethod
    def from_u64(cls, v: int) -> GuestPolicy:
        return cls(
            abi_minor=v & POLICY_ABI_MINOR_MASK,
            abi_major=(v >> POLICY_ABI_MAJOR_SHIFT) & 0xFF,
            smt=bool(v & POLICY_SMT),
            migrate_ma=bool(v & POLICY_MIGRATE_MA),
            debug=bool(v & POLICY_DEBUG),
            single_socket=bool(v & POLICY_SINGLE_SOCKET),
            cxl_allow=bool(v & POLICY_CXL_ALLOW),
            mem_aes_256_xts=bool(v & POLICY_MEM_AES_256_XTS),
            rapl_dis=bool(v & POLICY_RAPL_DIS),
            ciphertext_hiding=bool(v & POLICY_CIPHERTEXT_HIDING),
            page_swap_disable=bool(v & POLICY_PAGE_SWAP_DISABLE),
        )

    def to_u64(self) -> int:
        if not (0 <= self.abi_minor <= 0xFF and 0 <= self.abi_major <= 0xFF):
            raise ValueError("abi_minor/abi_major must fit in one byte")
        flags = (
            (self.smt, POLICY_SMT),
            (self.migrate_ma, POLICY_MIGRATE_MA),
            (self.debug, POLICY_DEBUG),
            (self.single_socket, POLICY_SINGLE_SOCKET),
            (self.cxl_allow, POLICY_CXL_ALLOW),
            (self.mem_aes_256_xts, POLICY_MEM_AES_256_XTS),
            (self.rapl_dis, POLICY_RAPL_DIS),
            (self.ciphertext_hiding, POLICY_CIPHERTEXT_HIDING),
            (self.page_swap_disable, POLICY_PAGE_SWAP_DISABLE),
        )
        v = self.abi_minor | (self.abi_major << POLICY_ABI_MAJOR_SHIFT) | POLICY_RESERVED_ONE
        for on, bit in flags:
            if on:
                v |= bit
        return v


class PlatformInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The decoded PLATFORM_INFO bits."""

    smt_en: bool
    tsme_en: bool
    ecc_en: bool
    rapl_dis: bool
    ciphertext_hiding_dram_en: bool
    alias_check_complete: bool
    iommu_write_safe: bool
    sev_tio_en: bool

    @classmethod
    def from_u64(cls, v: int) -> PlatformInfo:
        return cls(
            smt_en=bool(v & PLATFORM_SMT_EN),
            tsme_en=bool(v & PLATFORM_TSME_EN),
            ecc_en=bool(v & PLATFORM_ECC_EN),
            rapl_dis=bool(v & PLATFORM_RAPL_DIS),
            ciphertext_hiding_dram_en=bool(v & PLATFORM_CIPHERTEXT_HIDING_DRAM_EN),
            alias_check_complete=bool(v & PLATFORM_ALIAS_CHECK_COMPLETE),
            iommu_write_safe=bool(v & PLATFORM_IOMMU_WRITE_SAFE),
            sev_tio_en=bool(v & PLATFORM_SEV_TIO_EN),
        )


class SignerInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The decoded SIGNER_INFO (a.k.a. KEY_INFO) word."""

    author_key_en: bool
    mask_chip_key: bool
    signing_key: SigningKey


class SnpReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ATTESTATION_REPORT, every field named as in the ABI. Integers are decoded little-endian.

    ``cpuid_*`` are ``None`` before v3 and the mitigation vectors ``None`` before v5 (the bytes are reserved
    there). ``signature_r``/``signature_s`` are the 48-byte little-endian P-384 components.
    """

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: int
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: bytes
    signature_s: bytes

    # --- decoded views --------------------------------------------------------------------------------------
    @property
    def guest_policy(self) -> GuestPolicy:
        return GuestPolicy.from_u64(self.policy)

    @property
    def platform_info_bits(self) -> PlatformInfo:
        return PlatformInfo.from_u64(self.platform_info)

    @property
    def signer(self) -> SignerInfo:
        return SignerInfo(
            author_key_en=bool(self.signer_info & SIGNER_AUTHOR_KEY_EN),
            mask_chip_key=bool(self.signer_info & SIGNER_MASK_CHIP_KEY),
            signing_key=_SIGNING_KEYS[
                (self.signer_info >> SIGNER_SIGNING_KEY_SHIFT) & SIGNER_SIGNING_KEY_MASK
            ],
        )

    @property
    def current_version(self) -> str:
        return f"{self.current_major}.{self.current_minor}.{self.current_build}"

    @property
    def committed_version(self) -> str:
        return f"{self.committed_major}.{self.committed_minor}.{self.committed_build}"

    # --- serialisation --------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The exact report bytes. Raises ValueError if a field does not fit its slot or version."""
        has_cpuid = self.version >= CPUID_MIN_VERSION
        has_mit = self.version >= MIT_VECTOR_MIN_VERSION
        if has_cpuid != (self.cpuid_fam_id is not None) or has_cpuid != (self.cpuid_step is not None):
            raise ValueError("cpuid fields must be set exactly for versions >= 3")
        if has_cpuid != (self.cpuid_mod_id is not None):
            raise ValueError("cpuid fields must be set exactly for versions >= 3")
        if has_mit != (self.launch_mit_vector is not None) or has_mit != (
            self.current_mit_vector is not None
        ):
            raise ValueError("mitigation vectors must be set exactly for versions >= 5")
        b = bytearray(REPORT_SIZE)

        def put_int(off: int, size: int, value: int) -> None:
            b[off : off + size] = value.to_bytes(size, "little")

        def put_bytes(off: int, size: int, value: bytes) -> None:
            if len(value) != size:
                raise ValueError(f"field at 0x{off:03x} needs {size} bytes, got {len(value)}")
            b[off : off + size] = value

        put_int(OFF_VERSION, 4, self.version)
        put_int(OFF_GUEST_SVN, 4, self.guest_svn)
        put_int(OFF_POLICY, 8, self.policy)
        put_bytes(OFF_FAMILY_ID, FAMILY_ID_SIZE, self.family_id)
        put_bytes(OFF_IMAGE_ID, IMAGE_ID_SIZE, self.image_id)
        put_int(OFF_VMPL, 4, self.vmpl)
        put_int(OFF_SIGNATURE_ALGO, 4, self.signature_algo)
        put_int(OFF_CURRENT_TCB, 8, self.current_tcb)
        put_int(OFF_PLATFORM_INFO, 8, self.platform_info)
        put_int(OFF_SIGNER_INFO, 4, self.signer_info)
        put_bytes(OFF_REPORT_DATA, REPORT_DATA_SIZE, self.report_data)
        put_bytes(OFF_MEASUREMENT, MEASUREMENT_SIZE, self.measurement)
        put_bytes(OFF_HOST_DATA, HOST_DATA_SIZE, self.host_data)
        put_bytes(OFF_ID_KEY_DIGEST, DIGEST_SIZE, self.id_key_digest)
        put_bytes(OFF_AUTHOR_KEY_DIGEST, DIGEST_SIZE, self.author_key_digest)
        put_bytes(OFF_REPORT_ID, REPORT_ID_SIZE, self.report_id)
        put_bytes(OFF_REPORT_ID_MA, REPORT_ID_SIZE, self.report_id_ma)
        put_int(OFF_REPORTED_TCB, 8, self.reported_tcb)
        if self.cpuid_fam_id is not None and self.cpuid_mod_id is not None and self.cpuid_step is not None:
            put_int(OFF_CPUID_FAM_ID, 1, self.cpuid_fam_id)
            put_int(OFF_CPUID_MOD_ID, 1, self.cpuid_mod_id)
            put_int(OFF_CPUID_STEP, 1, self.cpuid_step)
        put_bytes(OFF_CHIP_ID, CHIP_ID_SIZE, self.chip_id)
        put_int(OFF_COMMITTED_TCB, 8, self.committed_tcb)
        put_int(OFF_CURRENT_BUILD, 1, self.current_build)
        put_int(OFF_CURRENT_MINOR, 1, self.current_minor)
        put_int(OFF_CURRENT_MAJOR, 1, self.current_major)
        put_int(OFF_COMMITTED_BUILD, 1, self.committed_build)
        put_int(OFF_COMMITTED_MINOR, 1, self.committed_minor)
        put_int(OFF_COMMITTED_MAJOR, 1, self.committed_major)
        put_int(OFF_LAUNCH_TCB, 8, self.launch_tcb)
        if self.launch_mit_vector is not None and self.current_mit_vector is not None:
            put_int(OFF_LAUNCH_MIT_VECTOR, 8, self.launch_mit_vector)
            put_int(OFF_CURRENT_MIT_VECTOR, 8, self.current_mit_vector)
        put_bytes(OFF_SIGNATURE_R, P384_COMPONENT_SIZE, self.signature_r)
        put_bytes(OFF_SIGNATURE_S, P384_COMPONENT_SIZE, self.signature_s)
        return bytes(b)


# Integer fields unpacked in four runs (the reserved bytes between them are checked by _mbz).
_HEAD = struct.Struct("<IIQ")  # VERSION, GUEST_SVN, POLICY
_WORDS = struct.Struct("<IIQQI")  # VMPL, SIGNATURE_ALGO, CURRENT_TCB, PLATFORM_INFO, SIGNER_INFO
_REPORTED = struct.Struct("<QBBB")  # REPORTED_TCB, CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP
_TAIL = struct.Struct("<QBBBxBBBxQQQ")  # COMMITTED_TCB, versions, LAUNCH_TCB, LAUNCH/CURRENT_MIT_VECTOR


def _mbz(data: bytes, start: int, end: int, what: str) -> None:
    # bytes.count runs in C; this is on the hot path of every verification.
    if data.count(0, start, end) != end - start:
        raise EvidenceError(
            "reserved_nonzero", f"reserved bytes 0x{start:03x}..0x{end - 1:03x} ({what}) are not zero"
        )


def _mbz_ranges(has_cpuid: bool, has_mit: bool) -> tuple[tuple[int, int, str], ...]:
    return (
        (OFF_RESERVED_04C, OFF_REPORT_DATA, "after SIGNER_INFO"),
        (OFF_RESERVED_18B if has_cpuid else OFF_CPUID_FAM_ID, OFF_CHIP_ID, "before CHIP_ID"),
        (OFF_RESERVED_1EB, OFF_RESERVED_1EB + 1, "after CURRENT_MAJOR"),
        (OFF_RESERVED_1EF, OFF_RESERVED_1EF + 1, "after COMMITTED_MAJOR"),
        (OFF_RESERVED_208 if has_mit else OFF_LAUNCH_MIT_VECTOR, SIGNED_SIZE, "before the signature"),
        (OFF_SIGNATURE_R + P384_COMPONENT_SIZE, OFF_SIGNATURE_S, "high bytes of SIGNATURE.R"),
        (OFF_SIGNATURE_S + P384_COMPONENT_SIZE, OFF_RESERVED_330, "high bytes of SIGNATURE.S"),
        (OFF_RESERVED_330, REPORT_SIZE, "after the signature"),
    )


def _mask(ranges: tuple[tuple[int, int, str], ...]) -> int:
    m = bytearray(REPORT_SIZE)
    for start, end, _ in ranges:
        m[start:end] = b"\xff" * (end - start)
    return int.from_bytes(m, "little")


# Must-be-zero ranges per layout, keyed by (has CPUID bytes, has mitigation vectors).
_MBZ_RANGES = {(c, m): _mbz_ranges(c, m) for c in (False, True) for m in (False, True)}
_MBZ_MASKS = {k: _mask(v) for k, v in _MBZ_RANGES.items()}


def parse_report(data: bytes, *, trailing_ok: bool = False) -> SnpReport:
    """Parse one ATTESTATION_REPORT; ``trailing_ok`` ignores bytes after the 0x4A0-byte report (opt-in).

    Raises :class:`EvidenceError` with code ``evidence.bad_length``, ``evidence.unsupported_version``,
    ``evidence.unknown_signature_algo``, ``evidence.unknown_signing_key`` or ``evidence.reserved_nonzero``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("report must be bytes")
    if len(data) < REPORT_SIZE or (len(data) > REPORT_SIZE and not trailing_ok):
        raise EvidenceError("bad_length", f"an SNP report is {REPORT_SIZE} bytes, got {len(data)}")
    data = bytes(data[:REPORT_SIZE]) if len(data) != REPORT_SIZE or not isinstance(data, bytes) else data
    version, guest_svn, policy = _HEAD.unpack_from(data, OFF_VERSION)
    vmpl, algo, current_tcb, platform_info, signer_info = _WORDS.unpack_from(data, OFF_VMPL)
    reported_tcb, fam, mod, step = _REPORTED.unpack_from(data, OFF_REPORTED_TCB)
    (committed_tcb, c_build, c_minor, c_major, k_build, k_minor, k_major, launch_tcb, launch_mit,
     current_mit) = _TAIL.unpack_from(data, OFF_COMMITTED_TCB)  # fmt: skip
    if version not in SUPPORTED_VERSIONS:
        raise EvidenceError("unsupported_version", f"SNP report version {version} is not supported (2-5)")
    if algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise EvidenceError(
            "unknown_signature_algo", f"signature algorithm {algo} is not ECDSA P-384/SHA-384 (1)"
        )
    if signer_info & SIGNER_RESERVED_MASK:
        raise EvidenceError("reserved_nonzero", f"SIGNER_INFO reserved bits 31:5 set (0x{signer_info:08x})")
    key = (signer_info >> SIGNER_SIGNING_KEY_SHIFT) & SIGNER_SIGNING_KEY_MASK
    if key not in _SIGNING_KEYS:
        raise EvidenceError("unknown_signing_key", f"SIGNER_INFO signing key type {key} is reserved")
    if policy & POLICY_RESERVED_MASK:
        raise EvidenceError("reserved_nonzero", f"POLICY reserved bits 63:26 set (0x{policy:016x})")
    if not policy & POLICY_RESERVED_ONE:
        raise EvidenceError("reserved_nonzero", f"POLICY bit 17 must be one (0x{policy:016x})")
    if platform_info & PLATFORM_RESERVED_MASK:
        raise EvidenceError(
            "reserved_nonzero", f"PLATFORM_INFO reserved bits 63:8 set (0x{platform_info:016x})"
        )
    has_cpuid = version >= CPUID_MIN_VERSION
    has_mit = version >= MIT_VECTOR_MIN_VERSION
    ranges = _MBZ_RANGES[(has_cpuid, has_mit)]
    # One big-integer AND checks every must-be-zero byte at once (hot path); name the range only on failure.
    if int.from_bytes(data, "little") & _MBZ_MASKS[(has_cpuid, has_mit)]:
        for start, end, what in ranges:
            _mbz(data, start, end, what)
    return SnpReport(
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=data[OFF_FAMILY_ID : OFF_FAMILY_ID + FAMILY_ID_SIZE],
        image_id=data[OFF_IMAGE_ID : OFF_IMAGE_ID + IMAGE_ID_SIZE],
        vmpl=vmpl,
        signature_algo=algo,
        current_tcb=current_tcb,
        platform_info=platform_info,
        signer_info=signer_info,
        report_data=data[OFF_REPORT_DATA : OFF_REPORT_DATA + REPORT_DATA_SIZE],
        measurement=data[OFF_MEASUREMENT : OFF_MEASUREMENT + MEASUREMENT_SIZE],
        host_data=data[OFF_HOST_DATA : OFF_HOST_DATA + HOST_DATA_SIZE],
        id_key_digest=data[OFF_ID_KEY_DIGEST : OFF_ID_KEY_DIGEST + DIGEST_SIZE],
        author_key_digest=data[OFF_AUTHOR_KEY_DIGEST : OFF_AUTHOR_KEY_DIGEST + DIGEST_SIZE],
        report_id=data[OFF_REPORT_ID : OFF_REPORT_ID + REPORT_ID_SIZE],
        report_id_ma=data[OFF_REPORT_ID_MA : OFF_REPORT_ID_MA + REPORT_ID_SIZE],
        reported_tcb=reported_tcb,
        cpuid_fam_id=fam if has_cpuid else None,
        cpuid_mod_id=mod if has_cpuid else None,
        cpuid_step=step if has_cpuid else None,
        chip_id=data[OFF_CHIP_ID : OFF_CHIP_ID + CHIP_ID_SIZE],
        committed_tcb=committed_tcb,
        current_build=c_build,
        current_minor=c_minor,
        current_major=c_major,
        committed_build=k_build,
        committed_minor=k_minor,
        committed_major=k_major,
        launch_tcb=launch_tcb,
        launch_mit_vector=launch_mit if has_mit else None,
        current_mit_vector=current_mit if has_mit else None,
        signature_r=data[OFF_SIGNATURE_R : OFF_SIGNATURE_R + P384_COMPONENT_SIZE],
        signature_s=data[OFF_SIGNATURE_S : OFF_SIGNATURE_S + P384_COMPONENT_SIZE],
    )
