"""Result types shared by every TEE: what a verification proved and what a validation found."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Final, Literal, TypeVar

import msgspec

from contrast.errors import ContrastError, PolicyError, from_code

Tee = Literal["snp", "tdx"]
R = TypeVar("R")


class AnyReportData:
    """Sentinel: the caller explicitly does not check REPORT_DATA (CLI inspection only, never a service)."""

    def __repr__(self) -> str:
        return "ANY_REPORT_DATA"


ANY_REPORT_DATA: Final = AnyReportData()


class Finding(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One mismatch between evidence and reference values (or one evidence defect)."""

    code: str  # ``policy.<reason>`` or ``evidence.<reason>``
    field: str  # JSON-path-like name of the checked field, e.g. ``MEASUREMENT`` or ``MinimumTCB.SNPVersion``
    expected: str = ""
    got: str = ""
    message: str = ""


class Claims(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What authentic evidence says about the workload, in a TEE-neutral form.

    ``policy_hash`` is the workload identity: SNP ``HOST_DATA`` or TDX ``MR_CONFIG_ID[0:32]``. It comes only
    from verified evidence, never from a request field.
    """

    tee: Tee
    platform: str  # product line / platform name: "Milan", "Genoa", "Turin", "TDX", "Emulated-SNP", ...
    policy_hash: bytes  # 32 bytes
    report_data: bytes  # 64 bytes
    measurement: bytes  # SNP MEASUREMENT (48) or TDX MRTD (48)
    tcb: dict[str, str] = {}  # human-readable TCB facts (component SVNs, TCB status)
    details: dict[str, str] = {}  # further decoded, verified facts (chip id, RTMRs, FMSPC, ...)


class ValidationResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of validating verified evidence. There is no ``__bool__`` on purpose: read ``accepted``."""

    accepted: bool
    claims: Claims
    findings: tuple[Finding, ...] = ()
    matched_reference: int | None = None  # index of the reference-value set that accepted, if any

    def __bool__(self) -> bool:  # guard against `if result:`
        raise TypeError("ValidationResult has no truth value; read .accepted")

    def require(self) -> Claims:
        """Return the claims if accepted, else raise the first finding as a typed error."""
        if self.accepted:
            return self.claims
        raise first_error(self.findings)


def first_error(findings: tuple[Finding, ...]) -> ContrastError:
    """The typed error for the first finding (its code kept as is); ``policy.no_reference_values`` if none."""
    if not findings:
        return PolicyError("no_reference_values", "no reference values matched and none were reported")
    f = findings[0]
    text = f.message or f"{f.field}: expected {f.expected or '?'}, got {f.got or '?'}"
    return from_code(f.code, text)


def report_data_matches(expected: bytes | AnyReportData, got: bytes) -> bool:
    """Constant-time REPORT_DATA comparison; only the explicit :data:`ANY_REPORT_DATA` skips it."""
    if isinstance(expected, AnyReportData):
        return True
    return len(expected) == 64 and hmac.compare_digest(expected, got)


def first_matching(
    tee: Tee, claims: Claims, references: Sequence[R], check: Callable[[R], list[Finding]]
) -> ValidationResult:
    """Accept with the first reference set that ``check`` passes; otherwise reject with every finding of
    every set (fields prefixed ``<tee>[i].``). An empty list rejects."""
    if not references:
        finding = Finding(
            code="policy.no_reference_values", field=tee, message=f"no {tee.upper()} reference values"
        )
        return ValidationResult(accepted=False, claims=claims, findings=(finding,))
    findings: list[Finding] = []
    for i, ref in enumerate(references):
        got = check(ref)
        if not got:
            return ValidationResult(accepted=True, claims=claims, matched_reference=i)
        findings += [msgspec.structs.replace(f, field=f"{tee}[{i}].{f.field}") for f in got]
    return ValidationResult(accepted=False, claims=claims, findings=tuple(findings))


def evidence_rejection(tee: Tee, error: ContrastError, field: str = "evidence") -> ValidationResult:
    """A rejected result for evidence that could not be checked; its claims are empty: nothing was proved."""
    claims = Claims(tee=tee, platform="", policy_hash=b"", report_data=b"", measurement=b"")
    finding = Finding(code=error.code, field=field, message=error.message)
    return ValidationResult(accepted=False, claims=claims, findings=(finding,))
