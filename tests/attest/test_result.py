from __future__ import annotations

import pytest

from contrast.attest.result import Claims, Finding, ValidationResult, first_error
from contrast.errors import CollateralError, EvidenceError, PolicyError

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
