"""Policy: compare a *verified* TDX quote with the manifest's TDX reference values. No I/O.

``validate`` accepts only a :class:`~contrast.evidence.tdx.verify.VerifiedTdxQuote`. It tries each reference
set in order and accepts with the first that matches; otherwise it rejects with *every* finding of every set
(fields prefixed ``tdx[i].``). Semantics of each value: :mod:`contrast.evidence.tdx.reference`. In addition:

* MR_CONFIG_ID carries the policy hash in bytes 0..31 (the workload identity, ``Claims.policy_hash``);
  bytes 32..47 must be zero, so that one policy hash has exactly one MR_CONFIG_ID
  (``policy.mr_config_id_malformed``).
* The platform must match the trust anchor the quote verified under: ``Emulated-TDX`` sets only match quotes
  rooted at their ``EmulatorRootFingerprint``; every other platform only quotes rooted at Intel's root.
* TCB status and ``MinTCBEvaluationDataNumber`` need collateral; a quote verified for authenticity only is
  rejected by every reference set (``policy.collateral_missing``).

:func:`verify_and_validate` is what the verifier service calls: an evidence or collateral failure comes back
as a rejected result with one finding (and empty claims), never as an exception.

Not compared (deliberately): MROWNER, MROWNERCONFIG (Contrast does not use them), MRSIGNERSEAM and
SEAMATTRIBUTES (checked against the TCB info's TDX module identity during verification), MRSERVICETD.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import datetime

from contrast.errors import CollateralError, ContrastError, EvidenceError, PolicyError
from contrast.evidence.result import (
    ANY_REPORT_DATA,
    AnyReportData,
    Claims,
    Finding,
    ValidationResult,
    evidence_rejection,
    first_matching,
    report_data_matches,
)
from contrast.evidence.tdx.reference import TdxReferenceValues
from contrast.evidence.tdx.trust import EMULATED_PLATFORM, INTEL_SGX_ROOT_CA_SHA256, TdxRoots
from contrast.evidence.tdx.verify import TdxCollateral, TdxVerifier, VerifiedTdxQuote


def claims_of(v: VerifiedTdxQuote) -> Claims:
    body = v.quote.body
    tcb: dict[str, str] = {
        "tee_tcb_svn": body.tee_tcb_svn.hex(),
        "pcesvn": str(v.pck.pcesvn),
        "sgx_tcb_components": ",".join(str(c) for c in v.pck.tcb_comp_svns),
        "qe_isvsvn": str(v.quote.signature_data.cert_data.qe_report.isv_svn),
    }
    if v.collateral is not None:
        tcb["status"] = v.collateral.tcb.status
        tcb["tcb_evaluation_data_number"] = str(v.collateral.tcb_info.tcb_evaluation_data_number)
        if v.collateral.tcb.advisory_ids:
            tcb["advisory_ids"] = ",".join(v.collateral.tcb.advisory_ids)
    else:
        tcb["status"] = "collateral missing"
    details = {
        "quote_version": str(v.quote.version),
        "body_type": str(v.quote.body_type),
        "mr_seam": body.mr_seam.hex(),
        "td_attributes": body.td_attributes.hex(),
        "xfam": body.xfam.hex(),
        "mr_config_id": body.mr_config_id.hex(),
        "fmspc": v.pck.fmspc.hex(),
        "pceid": v.pck.pceid.hex(),
        "root_fingerprint": v.root_fingerprint,
    }
    for i, rtmr in enumerate(body.rtmrs):
        details[f"rtmr{i}"] = rtmr.hex()
    if v.pck.piid is not None:
        details["piid"] = v.pck.piid.hex()
    return Claims(
        tee="tdx",
        platform=v.platform,
        policy_hash=body.mr_config_id[:32],
        report_data=body.report_data,
        measurement=body.mr_td,
        tcb=tcb,
        details=details,
    )


def _check(
    v: VerifiedTdxQuote, ref: TdxReferenceValues, expected_report_data: bytes | AnyReportData
) -> list[Finding]:
    out: list[Finding] = []
    body = v.quote.body

    def add(reason: str, field: str, expected: str = "", got: str = "", message: str = "") -> None:
        out.append(Finding(code=f"policy.{reason}", field=field, expected=expected, got=got, message=message))

    def eq(reason: str, field: str, expected_hex: str, got: bytes) -> None:
        if not hmac.compare_digest(bytes.fromhex(expected_hex), got):
            add(reason, field, expected_hex.lower(), got.hex())

    if ref.is_emulated:
        fp = (ref.EmulatorRootFingerprint or "").lower()
        if v.platform != EMULATED_PLATFORM or v.root_fingerprint != fp:
            add("platform_mismatch", "EmulatorRootFingerprint", fp, v.root_fingerprint)
    elif v.platform == EMULATED_PLATFORM:
        add(
            "platform_mismatch",
            "Platform",
            ref.Platform,
            v.platform,
            "an emulated quote never matches a real platform",
        )

    eq("measurement_mismatch", "MrTd", ref.MrTd, body.mr_td)
    eq("mrseam_mismatch", "MrSeam", ref.MrSeam, body.mr_seam)
    for i, (want, got) in enumerate(zip(ref.Rtmrs, body.rtmrs, strict=True)):
        eq("rtmr_mismatch", f"Rtmrs[{i}]", want, got)
    eq("xfam_mismatch", "Xfam", ref.Xfam, body.xfam)
    if body.debug and not ref.AllowDebugInsecure:
        add("debug_enabled", "TdAttributes.DEBUG", "0", "1", "the TD was launched with DEBUG")
    if ref.TdAttributes is not None:
        eq("td_attributes_mismatch", "TdAttributes", ref.TdAttributes, body.td_attributes)
    if any(body.mr_config_id[32:]):
        add("mr_config_id_malformed", "MrConfigId[32:48]", "00" * 16, body.mr_config_id[32:].hex())

    if not ref.any_piid:
        piid = v.pck.piid
        if piid is None or piid.hex() not in {p.lower() for p in ref.AllowedPIIDs}:
            add("piid_not_allowed", "AllowedPIIDs", "one of AllowedPIIDs", piid.hex() if piid else "none")

    if v.collateral is None:
        add("collateral_missing", "AcceptedTCBStatuses", message="TCB status needs collateral")
    else:
        status = v.collateral.tcb.status
        if status not in ref.AcceptedTCBStatuses:
            add("tcb_status", "AcceptedTCBStatuses", ",".join(ref.AcceptedTCBStatuses), status)
        numbers = (
            v.collateral.tcb_info.tcb_evaluation_data_number,
            v.collateral.qe_identity_tcb_evaluation_data_number,
        )
        if min(numbers) < ref.MinTCBEvaluationDataNumber:
            add(
                "tcb_too_low",
                "MinTCBEvaluationDataNumber",
                str(ref.MinTCBEvaluationDataNumber),
                str(min(numbers)),
            )

    # Constant time: REPORT_DATA binds key material and a nonce.
    if not report_data_matches(expected_report_data, body.report_data):
        add("report_data_mismatch", "REPORT_DATA", "the expected binding", "a different value")
    return out


def validate(
    verified: VerifiedTdxQuote,
    references: Sequence[TdxReferenceValues],
    *,
    expected_report_data: bytes | AnyReportData,
) -> ValidationResult:
    """Accept with the first matching reference set, or reject with every finding. An empty list rejects."""
    if not isinstance(verified, VerifiedTdxQuote):
        raise TypeError("validate() accepts only a VerifiedTdxQuote from TdxVerifier.verify()")
    claims = claims_of(verified)
    return first_matching("tdx", claims, references, lambda ref: _check(verified, ref, expected_report_data))


def rejection(error: ContrastError) -> ValidationResult:
    """A rejected result for evidence that did not verify; its claims are empty because nothing was proved."""
    return evidence_rejection("tdx", error)


def roots_for(
    references: Sequence[TdxReferenceValues], *, intel_root_sha256: str = INTEL_SGX_ROOT_CA_SHA256
) -> TdxRoots:
    """Intel's root for real platforms, or the named emulator roots; mixing the two is refused."""
    emulated = [r for r in references if r.is_emulated]
    if emulated and len(emulated) != len(references):
        raise ValueError(f"{EMULATED_PLATFORM} must not be mixed with real TDX platforms")
    if emulated:
        return TdxRoots.emulated(*(r.EmulatorRootFingerprint or "" for r in emulated))
    return TdxRoots.intel(intel_root_sha256)


def verify_and_validate(
    quote_bytes: bytes,
    collateral: TdxCollateral | None,
    reference: Sequence[TdxReferenceValues],
    expected_report_data: bytes,
    now: datetime,
    *,
    verifier: TdxVerifier | None = None,
    intel_root_sha256: str = INTEL_SGX_ROOT_CA_SHA256,
) -> ValidationResult:
    """Verify the quote with full collateral checks and validate it; failures become rejected results."""
    try:
        roots = roots_for(reference, intel_root_sha256=intel_root_sha256)
    except ValueError as e:
        return evidence_rejection("tdx", PolicyError("mixed_platforms", str(e)), field="tdx")
    if verifier is None:
        verifier = TdxVerifier(roots)
    elif verifier.roots != roots:
        raise ValueError("the verifier's roots do not match the reference values")
    try:
        verified = verifier.verify(quote_bytes, collateral=collateral, now=now)
    except (EvidenceError, CollateralError) as e:
        return rejection(e)
    return validate(verified, reference, expected_report_data=expected_report_data)


__all__ = [
    "ANY_REPORT_DATA",
    "claims_of",
    "rejection",
    "roots_for",
    "validate",
    "verify_and_validate",
]
