"""The parser: exact round trip, and a precise error for every way a report can be malformed."""

from __future__ import annotations

import pytest

from contrast.errors import EvidenceError
from contrast.evidence.snp import abi, kds
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from tests.evidence.snp.snp_fixtures import SNP_VECTORS, load_vector

REAL = load_vector(SNP_VECTORS[0]).report


def _set(report: bytes, off: int, value: bytes) -> bytes:
    b = bytearray(report)
    b[off : off + len(value)] = value
    return bytes(b)


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def _u64(v: int) -> bytes:
    return v.to_bytes(8, "little")


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("empty", b"", "evidence.bad_length"),
        ("one short", REAL[:-1], "evidence.bad_length"),
        ("one long", REAL + b"\x00", "evidence.bad_length"),
        ("version 0", _set(REAL, 0, _u32(0)), "evidence.unsupported_version"),
        ("version 1", _set(REAL, 0, _u32(1)), "evidence.unsupported_version"),
        ("version 6", _set(REAL, 0, _u32(6)), "evidence.unsupported_version"),
        ("version 2^32-1", _set(REAL, 0, _u32(0xFFFFFFFF)), "evidence.unsupported_version"),
        ("sig algo 0", _set(REAL, abi.OFF_SIGNATURE_ALGO, _u32(0)), "evidence.unknown_signature_algo"),
        ("sig algo 2", _set(REAL, abi.OFF_SIGNATURE_ALGO, _u32(2)), "evidence.unknown_signature_algo"),
        *[
            (
                f"signing key {k}",
                _set(REAL, abi.OFF_SIGNER_INFO, _u32(k << 2)),
                "evidence.unknown_signing_key",
            )
            for k in range(2, 7)
        ],
        ("signer info bit 5", _set(REAL, abi.OFF_SIGNER_INFO, _u32(1 << 5)), "evidence.reserved_nonzero"),
        ("signer info bit 31", _set(REAL, abi.OFF_SIGNER_INFO, _u32(1 << 31)), "evidence.reserved_nonzero"),
        ("policy bit 26", _set(REAL, abi.OFF_POLICY, _u64(0x30000 | 1 << 26)), "evidence.reserved_nonzero"),
        ("policy bit 63", _set(REAL, abi.OFF_POLICY, _u64(0x30000 | 1 << 63)), "evidence.reserved_nonzero"),
        ("policy bit 17 clear", _set(REAL, abi.OFF_POLICY, _u64(0x10000)), "evidence.reserved_nonzero"),
        ("platform bit 8", _set(REAL, abi.OFF_PLATFORM_INFO, _u64(1 << 8)), "evidence.reserved_nonzero"),
        ("reserved 0x04c", _set(REAL, 0x04C, b"\x01"), "evidence.reserved_nonzero"),
        ("v2 cpuid bytes", _set(REAL, 0x188, b"\x19"), "evidence.reserved_nonzero"),
        ("reserved 0x19f", _set(REAL, 0x19F, b"\x01"), "evidence.reserved_nonzero"),
        ("reserved 0x1eb", _set(REAL, 0x1EB, b"\x01"), "evidence.reserved_nonzero"),
        ("reserved 0x1ef", _set(REAL, 0x1EF, b"\x01"), "evidence.reserved_nonzero"),
        ("v2 mit vector", _set(REAL, 0x1F8, b"\x01"), "evidence.reserved_nonzero"),
        ("reserved 0x29f", _set(REAL, 0x29F, b"\x01"), "evidence.reserved_nonzero"),
        ("sig r high", _set(REAL, 0x2A0 + 48, b"\x01"), "evidence.reserved_nonzero"),
        ("sig s high", _set(REAL, 0x2E8 + 71, b"\x01"), "evidence.reserved_nonzero"),
        ("after sig", _set(REAL, 0x330, b"\x01"), "evidence.reserved_nonzero"),
        ("last byte", _set(REAL, 0x49F, b"\x01"), "evidence.reserved_nonzero"),
    ],
)
def test_malformed_reports_are_rejected_precisely(name: str, data: bytes, code: str) -> None:
    with pytest.raises(EvidenceError) as e:
        abi.parse_report(data)
    assert e.value.code == code, name


def test_trailing_bytes_only_when_the_caller_says_so() -> None:
    with pytest.raises(EvidenceError):
        abi.parse_report(REAL + bytes(16))
    assert abi.parse_report(REAL + b"trailing", trailing_ok=True).to_bytes() == REAL
    with pytest.raises(EvidenceError) as e:
        abi.parse_report(REAL[:-1], trailing_ok=True)
    assert e.value.code == "evidence.bad_length"


def test_v3_reserved_after_cpuid_is_checked() -> None:
    v3 = _set(_set(REAL, 0, _u32(3)), 0x188, bytes([0x19, 0x01, 0x01]))
    assert abi.parse_report(v3).cpuid_fam_id == 0x19
    with pytest.raises(EvidenceError) as e:
        abi.parse_report(_set(v3, 0x18B, b"\x01"))
    assert e.value.code == "evidence.reserved_nonzero"


def test_v5_mitigation_vectors_are_fields_and_the_rest_reserved() -> None:
    v5 = _set(_set(REAL, 0, _u32(5)), 0x1F8, _u64(3) + _u64(1))
    r = abi.parse_report(v5)
    assert (r.launch_mit_vector, r.current_mit_vector) == (3, 1)
    assert r.to_bytes() == v5
    with pytest.raises(EvidenceError) as e:
        abi.parse_report(_set(v5, 0x208, b"\x01"))
    assert e.value.code == "evidence.reserved_nonzero"


def test_v4_is_laid_out_like_v3() -> None:
    v4 = _set(_set(REAL, 0, _u32(4)), 0x188, bytes([0x19, 0x11, 0x01]))
    r = abi.parse_report(v4)
    assert (r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step, r.launch_mit_vector) == (0x19, 0x11, 1, None)
    assert r.to_bytes() == v4


def test_turin_bit6_platform_info_is_decoded_not_rejected() -> None:
    r = abi.parse_report(_set(REAL, abi.OFF_PLATFORM_INFO, _u64(0x67)))
    bits = r.platform_info_bits
    assert bits.iommu_write_safe
    assert bits.alias_check_complete
    assert not bits.sev_tio_en


@pytest.mark.parametrize(
    ("product", "raw", "want"),
    [
        # A real Turin REPORTED_TCB and the two Milan vectors.
        ("Turin", 0x4700000002000100, {"fmc": 0, "bootloader": 1, "tee": 0, "snp": 2, "microcode": 71}),
        ("Milan", 0x4405000000000002, {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}),
        ("Genoa", 0x7308000000000003, {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}),
    ],
)
def test_tcb_layout_per_product(product: kds.Product, raw: int, want: dict[str, int]) -> None:
    tcb = kds.decode_tcb(raw, product)
    assert tcb.as_dict() == want
    assert kds.encode_tcb(tcb, product) == raw


def test_turin_tcb_read_with_milan_layout_differs() -> None:
    # The trap of the product-dependent layout: same bytes, different meaning.
    assert (
        kds.decode_tcb(0x4700000002000100, "Milan").as_dict()
        != kds.decode_tcb(0x4700000002000100, "Turin").as_dict()
    )


@pytest.mark.parametrize(
    ("family", "model", "product"),
    [(0x19, 0x01, "Milan"), (0x19, 0x11, "Genoa"), (0x19, 0xA0, "Genoa"), (0x1A, 0x02, "Turin"),
     (0x19, 0x30, None), (0x1A, 0x12, None), (0x17, 0x01, None)],
)  # fmt: skip
def test_product_from_cpuid(family: int, model: int, product: str | None) -> None:
    assert kds.product_from_cpuid(family, model) == product


@pytest.mark.parametrize("version", [2, 3, 4, 5])
@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_emulator_round_trip_decodes_every_field_it_set(
    emulator: EmulatedSnpPlatform, version: int, product: kds.Product
) -> None:
    tcb = kds.Tcb(bootloader=7, tee=1, snp=21, microcode=200, fmc=3 if product == "Turin" else None)
    fields = {
        "report_data": bytes(range(64)),
        "host_data": bytes(range(100, 132)),
        "measurement": bytes(range(48)),
        "policy": abi.POLICY_RESERVED_ONE | abi.POLICY_SMT | abi.POLICY_SINGLE_SOCKET | 0x1F,
        "platform_info": 0x25,
        "vmpl": 2,
        "guest_svn": 9,
        "family_id": b"F" * 16,
        "image_id": b"I" * 16,
        "id_key_digest": b"K" * 48,
        "author_key_digest": b"A" * 48,
        "report_id": b"R" * 32,
        "mit_vector": 5,
    }
    data = emulator.report(version=version, product=product, tcb=tcb, **fields)  # type: ignore[arg-type]
    r = abi.parse_report(data)
    assert r.to_bytes() == data
    assert r.version == version
    for name in ("report_data", "host_data", "measurement", "policy", "platform_info", "vmpl", "guest_svn",
                 "family_id", "image_id", "id_key_digest", "author_key_digest", "report_id"):  # fmt: skip
        assert getattr(r, name) == fields[name], name
    for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
        assert kds.decode_tcb(getattr(r, name), product) == kds.decode_tcb(
            kds.encode_tcb(tcb, product), product
        )
    assert r.chip_id == emulator.chip_id(product)
    if version >= 3:
        assert r.cpuid_fam_id is not None
        assert r.cpuid_mod_id is not None
        assert kds.product_from_cpuid(r.cpuid_fam_id, r.cpuid_mod_id) == product
    else:
        assert r.cpuid_fam_id is None
    if version >= 5:
        assert (r.launch_mit_vector, r.current_mit_vector) == (5, 5)
    else:
        assert r.launch_mit_vector is None
    assert r.guest_policy.single_socket
    assert r.guest_policy.abi_minor == 0x1F
