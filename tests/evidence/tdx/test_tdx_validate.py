"""Validation against ``ReferenceValues.tdx``: every reference value, fail-closed defaults, emulator roots."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from contrast.evidence.tdx.emulator import EmulatedTdxPlatform, tcb_level
from contrast.evidence.tdx.reference import TdxReferenceValues
from contrast.evidence.tdx.validate import ANY_REPORT_DATA, validate, verify_and_validate
from contrast.evidence.tdx.verify import TdxCollateral, TdxVerifier
from tests.evidence.tdx.tdx_helpers import (
    EMU_NOW,
    MRTD,
    POLICY_HASH,
    REAL_NOW,
    REPORT_DATA,
    RTMRS,
    emu_quote,
    emu_reference,
)


def _codes(result: Any) -> list[str]:
    return [f.code for f in result.findings]


def test_emulated_quote_is_accepted_with_matching_references(
    platform: EmulatedTdxPlatform, emu_collateral: TdxCollateral
) -> None:
    ref = emu_reference(platform)
    r = verify_and_validate(emu_quote(platform), emu_collateral, [ref], REPORT_DATA, EMU_NOW)
    assert r.accepted, r.findings
    assert r.matched_reference == 0
    assert r.claims.tee == "tdx"
    assert r.claims.platform == "Emulated-TDX"
    assert r.claims.policy_hash == POLICY_HASH
    assert r.claims.measurement == MRTD
    assert r.claims.report_data == REPORT_DATA
    assert r.claims.tcb["status"] == "UpToDate"
    assert r.claims.details["rtmr3"] == RTMRS[3].hex()


@pytest.mark.parametrize(
    ("quote_kw", "ref_kw", "code"),
    [
        ({"mrtd": b"\x12" * 48}, {}, "policy.measurement_mismatch"),
        ({"rtmrs": (RTMRS[0], RTMRS[1], RTMRS[2], bytes(48))}, {}, "policy.rtmr_mismatch"),
        ({"mr_seam": bytes(48)}, {}, "policy.mrseam_mismatch"),
        ({"xfam": bytes(8)}, {}, "policy.xfam_mismatch"),
        ({"td_attributes": bytes.fromhex("0100001000000000")}, {}, "policy.debug_enabled"),
        ({"td_attributes": bytes.fromhex("0000000000000000")}, {}, "policy.td_attributes_mismatch"),
        ({"mr_config_id": POLICY_HASH + b"\x01" + bytes(15)}, {}, "policy.mr_config_id_malformed"),
        ({"report_data": bytes(64)}, {}, "policy.report_data_mismatch"),
        ({}, {"AllowedPIIDs": ["00" * 16]}, "policy.piid_not_allowed"),
        ({}, {"AllowedPIIDs": []}, "policy.piid_not_allowed"),
        ({}, {"MinTCBEvaluationDataNumber": 18}, "policy.tcb_too_low"),
        ({}, {"EmulatorRootFingerprint": "ab" * 32}, "evidence.untrusted_root"),
    ],
)
def test_each_reference_value_is_enforced(
    platform: EmulatedTdxPlatform,
    emu_collateral: TdxCollateral,
    quote_kw: dict[str, Any],
    ref_kw: dict[str, Any],
    code: str,
) -> None:
    r = verify_and_validate(
        emu_quote(platform, **quote_kw),
        emu_collateral,
        [emu_reference(platform, **ref_kw)],
        REPORT_DATA,
        EMU_NOW,
    )
    assert not r.accepted
    assert code in _codes(r), r.findings


def test_debug_allowed_only_when_insecure_flag_is_set(
    platform: EmulatedTdxPlatform, emu_collateral: TdxCollateral
) -> None:
    attrs = bytes.fromhex("0100001000000000")
    ref = emu_reference(platform, TdAttributes=None, AllowDebugInsecure=True)
    q = emu_quote(platform, td_attributes=attrs)
    assert verify_and_validate(q, emu_collateral, [ref], REPORT_DATA, EMU_NOW).accepted
    ref = emu_reference(platform, TdAttributes=attrs.hex())  # exact match does not lift the debug refusal
    assert _codes(verify_and_validate(q, emu_collateral, [ref], REPORT_DATA, EMU_NOW)) == [
        "policy.debug_enabled"
    ]


@pytest.mark.parametrize(
    ("status", "accepted_statuses", "ok"),
    [
        ("OutOfDate", None, False),
        ("SWHardeningNeeded", None, False),
        ("SWHardeningNeeded", ["UpToDate", "SWHardeningNeeded"], True),
        ("OutOfDate", ["OutOfDate"], True),
        ("Revoked", ["UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "OutOfDate"], False),
    ],
)
def test_accepted_tcb_statuses(
    platform: EmulatedTdxPlatform, status: str, accepted_statuses: list[str] | None, ok: bool
) -> None:
    col = platform.collateral(issued=EMU_NOW - dt.timedelta(days=1), tcb_levels=[tcb_level(status)])
    kw = {} if accepted_statuses is None else {"AcceptedTCBStatuses": accepted_statuses}
    r = verify_and_validate(emu_quote(platform), col, [emu_reference(platform, **kw)], REPORT_DATA, EMU_NOW)
    assert r.accepted == ok
    if not ok:
        assert "policy.tcb_status" in _codes(r)


def test_no_match_is_never_accepted(platform: EmulatedTdxPlatform) -> None:
    col = platform.collateral(
        issued=EMU_NOW - dt.timedelta(days=1), tcb_levels=[tcb_level("UpToDate", pcesvn=99)]
    )
    every = ["UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "OutOfDate", "Revoked"]
    r = verify_and_validate(
        emu_quote(platform), col, [emu_reference(platform, AcceptedTCBStatuses=every)], REPORT_DATA, EMU_NOW
    )
    assert _codes(r) == ["policy.tcb_status"]
    assert r.claims.tcb["status"] == "NoMatch"
    with pytest.raises(ValueError, match="unknown"):
        emu_reference(platform, AcceptedTCBStatuses=["NoMatch"])


def test_missing_collateral_rejects_in_the_service_path(platform: EmulatedTdxPlatform) -> None:
    r = verify_and_validate(emu_quote(platform), None, [emu_reference(platform)], REPORT_DATA, EMU_NOW)
    assert _codes(r) == ["collateral.missing"]
    assert r.claims.policy_hash == b""


def test_authenticity_only_rejects_under_every_reference(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier
) -> None:
    v = emu_verifier.verify(emu_quote(platform), collateral=None, now=EMU_NOW, authenticity_only=True)
    r = validate(v, [emu_reference(platform)], expected_report_data=ANY_REPORT_DATA)
    assert _codes(r) == ["policy.collateral_missing"]
    assert r.claims.tcb["status"] == "collateral missing"


def test_every_finding_of_every_reference_is_reported(
    platform: EmulatedTdxPlatform, emu_collateral: TdxCollateral
) -> None:
    refs = [emu_reference(platform, MrTd="00" * 48), emu_reference(platform, Xfam="00" * 8)]
    r = verify_and_validate(emu_quote(platform), emu_collateral, refs, REPORT_DATA, EMU_NOW)
    assert [(f.code, f.field) for f in r.findings] == [
        ("policy.measurement_mismatch", "tdx[0].MrTd"),
        ("policy.xfam_mismatch", "tdx[1].Xfam"),
    ]
    refs.append(emu_reference(platform))
    assert (
        verify_and_validate(emu_quote(platform), emu_collateral, refs, REPORT_DATA, EMU_NOW).matched_reference
        == 2
    )


def test_empty_and_mixed_reference_lists_reject(
    platform: EmulatedTdxPlatform, emu_collateral: TdxCollateral, expected: dict[str, Any]
) -> None:
    assert _codes(verify_and_validate(emu_quote(platform), emu_collateral, [], REPORT_DATA, EMU_NOW)) == [
        "evidence.untrusted_root"  # no reference values: Intel's root only, and this is the emulator's chain
    ]
    real = _real_reference(expected)
    mixed = verify_and_validate(
        emu_quote(platform), emu_collateral, [emu_reference(platform), real], REPORT_DATA, EMU_NOW
    )
    assert _codes(mixed) == ["policy.mixed_platforms"]


def _real_reference(expected: dict[str, Any], **kw: Any) -> TdxReferenceValues:
    k = expected["key_fields"]
    values = {
        "Platform": "Metal-QEMU-TDX",
        "MrTd": k["mr_td"],
        "MrSeam": k["mr_seam"],
        "Rtmrs": [k[f"rtmr{i}"] for i in range(4)],
        "Xfam": k["xfam"],
        "TdAttributes": k["td_attributes"],
        "AllowedPIIDs": [expected["decoded"]["pck_extensions"]["platform_instance_id"]],
        "MinTCBEvaluationDataNumber": 15,
    }
    values.update(kw)
    return TdxReferenceValues(**values)


def test_real_vector_is_rejected_only_for_its_tcb_status(
    real_quote: bytes, real_collateral: TdxCollateral, expected: dict[str, Any]
) -> None:
    rd = bytes.fromhex(expected["key_fields"]["report_data"])
    r = verify_and_validate(real_quote, real_collateral, [_real_reference(expected)], rd, REAL_NOW)
    assert [(f.code, f.got) for f in r.findings] == [("policy.tcb_status", "NoMatch")]
    assert r.claims.platform == "TDX"
    assert r.claims.policy_hash == bytes(32)
    # The emulator's reference values never accept a real quote, and vice versa.
    assert _codes(verify_and_validate(real_quote, real_collateral, [], rd, REAL_NOW)) == [
        "policy.no_reference_values"
    ]


def test_reference_json_is_strict(platform: EmulatedTdxPlatform) -> None:
    good = msgspec.json.encode(emu_reference(platform))
    assert msgspec.json.decode(good, type=TdxReferenceValues) == emu_reference(platform)
    for bad in (
        good.replace(b'"Xfam"', b'"XFAM"'),
        good.replace(b'"MrTd":"11', b'"MrTd":"1'),
        good.replace(b'"Platform":"Emulated-TDX"', b'"Platform":"Metal-QEMU-TDX"'),
        good.replace(b',"EmulatorRootFingerprint":"' + platform.root_fingerprint.encode() + b'"', b""),
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(bad, type=TdxReferenceValues)
    with pytest.raises(ValueError, match="alone"):
        emu_reference(platform, AllowedPIIDs=["*", "00" * 16])
    with pytest.raises(ValueError, match="Rtmrs"):
        emu_reference(platform, Rtmrs=["00" * 48] * 3)
    assert emu_reference(platform, AllowedPIIDs=["*"]).any_piid
