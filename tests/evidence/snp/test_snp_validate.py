"""Policy: each reference value in turn, the debug rule, the emulator rule, and reference-value decoding."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from contrast.evidence.refvalues import ReferenceValues
from contrast.evidence.snp import abi, kds, validate, verify
from contrast.evidence.snp.emulator import DEFAULT_MEASUREMENT, EmulatedSnpPlatform
from contrast.evidence.snp.reference import SnpReferenceValues
from tests.evidence.snp.snp_fixtures import SNP_VECTORS, VECTOR_TIME, load_vector

RD = bytes(range(64))


def _ref(base: SnpReferenceValues, **changes: Any) -> SnpReferenceValues:
    d = msgspec.to_builtins(base)
    for path, value in changes.items():
        node = d
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return msgspec.convert(d, SnpReferenceValues)


def _run(emulator: EmulatedSnpPlatform, refs: list[SnpReferenceValues], **report: Any) -> Any:
    product = report.get("product", "Milan")
    tcb = report.get("tcb")
    data = emulator.report(report_data=report.pop("report_data", RD), **report)
    return validate.verify_and_validate(
        data, emulator.cert_chain(product, tcb), None, refs, RD, dt.datetime.now(dt.UTC)
    )


@pytest.fixture(scope="module")
def base(emulator: EmulatedSnpPlatform) -> SnpReferenceValues:
    return emulator.reference_values()


def test_default_emulated_report_is_accepted(emulator: EmulatedSnpPlatform, base: SnpReferenceValues) -> None:
    result = _run(emulator, [base])
    assert result.accepted
    assert result.matched_reference == 0
    assert result.claims.tee == "snp"
    assert result.claims.platform == "Emulated-SNP"
    assert result.claims.policy_hash == bytes(32)
    assert result.claims.measurement == DEFAULT_MEASUREMENT
    assert result.claims.report_data == RD
    assert result.require() is result.claims


@pytest.mark.parametrize("product", ["Genoa", "Turin"])
def test_each_product_with_its_own_reference(emulator: EmulatedSnpPlatform, product: kds.Product) -> None:
    result = _run(emulator, [emulator.reference_values(product=product)], product=product)
    assert result.accepted, result.findings


LOW = kds.Tcb(bootloader=4, tee=0, snp=21, microcode=213)  # snp one below the default minimum


@pytest.mark.parametrize(
    ("name", "report", "ref", "code", "field"),
    [
        ("measurement", {"measurement": bytes(48)}, {}, "policy.measurement_mismatch", "MEASUREMENT"),
        ("report data", {"report_data": bytes(64)}, {}, "policy.report_data_mismatch", "REPORT_DATA"),
        ("debug", {"policy": 0x30000 | abi.POLICY_DEBUG}, {}, "policy.debug_enabled", "POLICY.DEBUG"),
        ("policy migrate", {"policy": 0x30000 | abi.POLICY_MIGRATE_MA}, {}, "policy.guest_policy_mismatch",
         "POLICY"),
        ("policy no smt", {"policy": 0x20000}, {}, "policy.guest_policy_mismatch", "POLICY"),
        ("policy abi", {}, {"GuestPolicy__ABIMinor": 1}, "policy.guest_policy_mismatch", "POLICY"),
        ("platform tsme", {"platform_info": 0x1}, {}, "policy.platform_info_mismatch",
         "PLATFORM_INFO.TSMEEnabled"),
        ("vmpl", {"vmpl": 1}, {}, "policy.vmpl_mismatch", "VMPL"),
        ("reported tcb", {"tcb": LOW}, {}, "policy.tcb_too_low", "REPORTED_TCB.snp"),
        ("current tcb", {"current_tcb": LOW}, {}, "policy.tcb_too_low", "CURRENT_TCB.snp"),
        ("committed tcb", {"committed_tcb": LOW}, {}, "policy.tcb_too_low", "COMMITTED_TCB.snp"),
        ("launch tcb", {"launch_tcb": LOW}, {}, "policy.tcb_too_low", "LAUNCH_TCB.snp"),
        ("microcode", {}, {"MinimumTCB__MicrocodeVersion": 214}, "policy.tcb_too_low",
         "REPORTED_TCB.microcode"),
        ("chip id", {}, {"AllowedChipIDs": ["00" * 64]}, "policy.chip_id_not_allowed", "CHIP_ID"),
        ("id key", {}, {"TrustedIDKeyDigests": ["11" * 48]}, "policy.id_key_not_trusted", "ID_KEY_DIGEST"),
        ("mit vector", {"mit_vector": 1}, {"MinimumMitigationVector": 3}, "policy.mitigation_vector_too_low",
         "LAUNCH_MIT_VECTOR"),
        ("mit vector v3", {"version": 3}, {"MinimumMitigationVector": 1}, "policy.mitigation_vector_too_low",
         "MIT_VECTOR"),
        ("product", {}, {"ProductName": "Genoa"}, "policy.product_mismatch", "ProductName"),
        ("emulator root", {}, {"EmulatorRootFingerprint": "ab" * 32}, "evidence.untrusted_root", "evidence"),
    ],
)  # fmt: skip
def test_each_reference_value_rejects(
    emulator: EmulatedSnpPlatform, base: SnpReferenceValues, name: str, report: dict[str, Any],
    ref: dict[str, Any], code: str, field: str,
) -> None:  # fmt: skip
    result = _run(emulator, [_ref(base, **ref)], **report)
    assert not result.accepted, name
    codes = {(f.code, f.field) for f in result.findings}
    want_field = field if code.startswith("evidence.") else f"snp[0].{field}"
    assert (code, want_field) in codes, (name, codes)
    with pytest.raises(Exception) as e:
        result.require()
    assert getattr(e.value, "code", None) == result.findings[0].code


def test_minimums_met_exactly_and_above_accept(
    emulator: EmulatedSnpPlatform, base: SnpReferenceValues
) -> None:
    higher = kds.Tcb(bootloader=5, tee=1, snp=30, microcode=250)
    assert _run(emulator, [base], tcb=higher).accepted
    ok_mit = _ref(base, MinimumMitigationVector=5)
    assert _run(emulator, [ok_mit], mit_vector=7).accepted


def test_debug_override_is_explicit(emulator: EmulatedSnpPlatform, base: SnpReferenceValues) -> None:
    debug_policy = 0x30000 | abi.POLICY_DEBUG
    loud = _ref(base, AllowDebugInsecure=True, GuestPolicy__Debug=True)
    assert _run(emulator, [loud], policy=debug_policy).accepted
    # The override alone does not change the exact-policy rule.
    assert not _run(emulator, [_ref(base, AllowDebugInsecure=True)], policy=debug_policy).accepted


def test_every_finding_of_every_set_is_reported(
    emulator: EmulatedSnpPlatform, base: SnpReferenceValues
) -> None:
    wrong = _ref(base, TrustedMeasurement="00" * 48, VMPL=2)
    result = _run(emulator, [wrong, _ref(base, VMPL=3)])
    fields = {f.field for f in result.findings}
    assert {"snp[0].MEASUREMENT", "snp[0].VMPL", "snp[1].VMPL"} <= fields
    assert _run(emulator, [wrong, base]).matched_reference == 1


def test_no_reference_values_rejects(emulator: EmulatedSnpPlatform) -> None:
    result = _run(emulator, [])
    assert not result.accepted
    assert result.findings[0].code in {"evidence.untrusted_root", "policy.no_reference_values"}


def _vector_ref(debug: bool = False, allow: bool = False, crl: bool | None = False) -> SnpReferenceValues:
    v = load_vector("snp_milan_v2_gosevguest")
    r = abi.parse_report(v.report)
    return msgspec.convert(
        {
            "Platform": "Metal-QEMU-SNP", "ProductName": "Milan", "TrustedMeasurement": r.measurement.hex(),
            "MinimumTCB": {"BootloaderVersion": 2, "TEEVersion": 0, "SNPVersion": 5, "MicrocodeVersion": 68},
            "GuestPolicy": {"ABIMinor": 0, "ABIMajor": 0, "SMT": True, "MigrateMA": False, "Debug": debug,
                            "SingleSocket": False, "CXLAllowed": False, "MemAES256XTS": False,
                            "RAPLDis": False, "CipherTextHiding": False, "PageSwapDisable": False},
            "PlatformInfo": {"SMTEnabled": True, "TSMEEnabled": False, "ECCEnabled": False,
                             "RAPLDisabled": False, "CiphertextHidingDRAMEnabled": False,
                             "AliasCheckComplete": False, "TIOEnabled": False},
            "VMPL": 0, "AllowedChipIDs": [r.chip_id.hex()], "MinimumMitigationVector": None,
            "AllowDebugInsecure": allow, "CheckRevocations": crl,
        },
        SnpReferenceValues,
    )  # fmt: skip


def test_real_platforms_require_a_revocation_check_by_default() -> None:
    # The shared vectors come without AMD's CRL: by default a real platform then refuses them.
    v = load_vector("snp_milan_v2_gosevguest")
    rd = abi.parse_report(v.report).report_data
    loud = _vector_ref(debug=True, allow=True, crl=None)
    assert loud.requires_crl
    result = validate.verify_and_validate(v.report, v.certs(), None, [loud], rd, VECTOR_TIME)
    assert [f.code for f in result.findings] == ["policy.crl_missing"]
    assert result.claims.details["crl_checked"] == "false"
    assert validate.verify_and_validate(
        v.report, v.certs(), None, [_vector_ref(debug=True, allow=True)], rd, VECTOR_TIME
    ).accepted


def test_gosevguest_vector_is_rejected_for_debug_by_default() -> None:
    v = load_vector("snp_milan_v2_gosevguest")
    rd = abi.parse_report(v.report).report_data
    result = validate.verify_and_validate(v.report, v.certs(), None, [_vector_ref()], rd, VECTOR_TIME)
    assert not result.accepted
    assert [f.code for f in result.findings] == ["policy.debug_enabled"]
    loud = _vector_ref(debug=True, allow=True)
    assert validate.verify_and_validate(v.report, v.certs(), None, [loud], rd, VECTOR_TIME).accepted


@pytest.mark.parametrize("name", SNP_VECTORS)
def test_real_report_never_matches_emulated_reference(name: str, emulator: EmulatedSnpPlatform) -> None:
    v = load_vector(name)
    rd = abi.parse_report(v.report).report_data
    emu = _ref(_vector_ref(debug=True, allow=True), Platform="Emulated-SNP",
               EmulatorRootFingerprint=emulator.root_fingerprint)  # fmt: skip
    result = validate.verify_and_validate(v.report, v.certs(), None, [emu], rd, VECTOR_TIME)
    assert not result.accepted
    assert "policy.platform_mismatch" in {f.code for f in result.findings}


def test_emulated_report_never_matches_real_reference(
    emulator: EmulatedSnpPlatform, base: SnpReferenceValues
) -> None:
    # Without an Emulated-SNP reference set the emulator root is not even a candidate root.
    real = _ref(base, Platform="Metal-QEMU-SNP", EmulatorRootFingerprint=None)
    result = _run(emulator, [real])
    assert [f.code for f in result.findings] == ["evidence.untrusted_root"]
    # Listed by an emulated set, it still cannot satisfy the real set.
    verifier = verify.SnpVerifier(frozenset({bytes.fromhex(emulator.root_fingerprint)}))
    verified = verifier.verify(
        emulator.report(report_data=RD), emulator.cert_chain(), now=dt.datetime.now(dt.UTC)
    )
    result = validate.validate(verified, [real], expected_report_data=RD)
    assert "policy.emulated_platform" in {f.code for f in result.findings}


def test_validate_accepts_only_verified_reports(base: SnpReferenceValues) -> None:
    with pytest.raises(TypeError):
        validate.validate(b"\x00" * 1184, [base], expected_report_data=RD)  # type: ignore[arg-type]


# --- decoding reference values ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("short measurement", {"TrustedMeasurement": "00" * 47}),
        ("non-hex measurement", {"TrustedMeasurement": "zz" * 48}),
        ("chip id length", {"AllowedChipIDs": ["00" * 63]}),
        ("empty chip ids", {"AllowedChipIDs": []}),
        ("wildcard mixed", {"AllowedChipIDs": ["*", "00" * 64]}),
        ("id key length", {"TrustedIDKeyDigests": ["00" * 32]}),
        ("emulated without root", {"EmulatorRootFingerprint": None}),
        ("root length", {"EmulatorRootFingerprint": "00" * 31}),
        ("real with root", {"Platform": "Metal-QEMU-SNP"}),
        ("debug without override", {"GuestPolicy__Debug": True}),
        ("milan with fmc", {"MinimumTCB__FMCVersion": 0}),
        ("turin without fmc", {"ProductName": "Turin"}),
        ("unknown product", {"ProductName": "Naples"}),
        ("vmpl 4", {"VMPL": 4}),
        ("tcb 256", {"MinimumTCB__SNPVersion": 256}),
        ("bad platform name", {"Platform": "bad name!"}),
    ],
)
def test_bad_reference_values_do_not_load(
    base: SnpReferenceValues, name: str, change: dict[str, Any]
) -> None:
    with pytest.raises(msgspec.ValidationError):
        _ref(base, **change)


def test_missing_and_unknown_keys_do_not_load(base: SnpReferenceValues) -> None:
    d = msgspec.to_builtins(base)
    for key in ("TrustedMeasurement", "MinimumTCB", "GuestPolicy", "PlatformInfo", "VMPL", "AllowedChipIDs",
                "MinimumMitigationVector"):  # fmt: skip
        broken = {k: v for k, v in d.items() if k != key}
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(broken, SnpReferenceValues)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**d, "Surprise": 1}, SnpReferenceValues)


def test_reference_values_never_mix_emulated_and_real(base: SnpReferenceValues) -> None:
    real = msgspec.to_builtins(_ref(base, Platform="Metal-QEMU-SNP", EmulatorRootFingerprint=None))
    emu = msgspec.to_builtins(base)
    assert len(msgspec.json.decode(msgspec.json.encode({"snp": [emu, emu]}), type=ReferenceValues).snp) == 2
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode({"snp": [emu, real]}), type=ReferenceValues)
