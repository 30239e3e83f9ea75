from __future__ import annotations

import pytest

from contrast.errors import CollateralError, EvidenceError, PolicyError
from contrast.evidence.result import Claims, Finding, ValidationResult, first_error

CLAIMS = Claims(tee="snp", platform="Milan", policy_hash=b"", report_data=b"", measurement=b"")


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("evidence.bad_signature", EvidenceError),
        ("policy.debug_enabled", PolicyError),
        ("collateral.missing", CollateralError),
    ],
)
def test_first_error_keeps_the_code(code: str, cls: type) -> None:
    err = first_error((Finding(code=code, field="x"),))
    assert isinstance(err, cls)
    assert err.code == code


def test_require_raises_the_first_finding() -> None:
    result = ValidationResult(
        accepted=False, claims=CLAIMS, findings=(Finding(code="policy.tcb_too_low", field="MinimumTCB"),)
    )
    with pytest.raises(PolicyError) as e:
        result.require()
    assert e.value.code == "policy.tcb_too_low"


def test_require_returns_claims_when_accepted() -> None:
    assert ValidationResult(accepted=True, claims=CLAIMS).require() is CLAIMS


def test_no_findings_still_rejects() -> None:
    assert first_error(()).code == "policy.no_reference_values"


def test_result_has_no_truth_value() -> None:
    with pytest.raises(TypeError):
        bool(ValidationResult(accepted=True, claims=CLAIMS))


def test_report_data_matches_fails_closed() -> None:
    from contrast.evidence.result import ANY_REPORT_DATA, report_data_matches

    rd = bytes(range(64))
    assert report_data_matches(rd, rd)
    assert not report_data_matches(rd[:63], rd[:63])  # a short expectation never matches
    assert not report_data_matches(bytes(64), rd)
    assert report_data_matches(ANY_REPORT_DATA, rd)  # only the explicit sentinel skips the check


def test_first_matching_reports_every_set_and_accepts_the_first_clean_one() -> None:
    from contrast.evidence.result import first_matching

    bad = [Finding(code="policy.measurement_mismatch", field="MEASUREMENT")]
    rejected = first_matching("snp", CLAIMS, ["a", "b"], lambda ref: bad)
    assert not rejected.accepted
    assert [f.field for f in rejected.findings] == ["snp[0].MEASUREMENT", "snp[1].MEASUREMENT"]
    accepted = first_matching("snp", CLAIMS, ["a", "b"], lambda ref: bad if ref == "a" else [])
    assert accepted.accepted
    assert accepted.matched_reference == 1
    empty = first_matching("tdx", CLAIMS, [], lambda ref: [])
    assert not empty.accepted
    assert empty.findings[0].code == "policy.no_reference_values"
