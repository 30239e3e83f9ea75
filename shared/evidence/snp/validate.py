"""Policy: compare a *verified* SNP report with the manifest's SNP reference values. No I/O.

``validate`` accepts only a :class:`~contrast.evidence.snp.verify.VerifiedSnpReport`, so unverified bytes
cannot be validated. It tries each reference-value set in order and accepts with the first that matches;
otherwise it rejects with *every* finding of every set (fields prefixed ``snp[i].``). The semantics of each
reference value are documented in :mod:`contrast.evidence.snp.reference`.

:func:`verify_and_validate` is the one call the verifier service makes: an evidence failure comes back as a
rejected result with one ``evidence.*`` finding (and empty claims), never as an exception, so that the service
can sign a negative verdict for it.

Checks we chose not to make: GUEST_SVN, FAMILY_ID, IMAGE_ID and AUTHOR_KEY_DIGEST are not compared (Contrast
pins the launch measurement and, optionally, the ID key; the ID block's SVN and ids are the ID-key owner's
business); REPORT_ID/REPORT_ID_MA are per-launch identifiers with nothing to compare against.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import datetime

from contrast.errors import EvidenceError
from contrast.evidence import result
from contrast.evidence.result import (
    ANY_REPORT_DATA,
    AnyReportData,
    Claims,
    Finding,
    ValidationResult,
    first_matching,
    report_data_matches,
)
from contrast.evidence.snp import abi, reference
from contrast.evidence.snp.kds import Product
from contrast.evidence.snp.reference import SnpReferenceValues
from contrast.evidence.snp.verify import SnpVerifier, VerifiedSnpReport

_PLATFORM_BITS = (
    ("SMTEnabled", abi.PLATFORM_SMT_EN),
    ("TSMEEnabled", abi.PLATFORM_TSME_EN),
    ("ECCEnabled", abi.PLATFORM_ECC_EN),
    ("RAPLDisabled", abi.PLATFORM_RAPL_DIS),
    ("CiphertextHidingDRAMEnabled", abi.PLATFORM_CIPHERTEXT_HIDING_DRAM_EN),
    ("AliasCheckComplete", abi.PLATFORM_ALIAS_CHECK_COMPLETE),
    ("TIOEnabled", abi.PLATFORM_SEV_TIO_EN),
)


def expected_policy(ref: reference.SnpGuestPolicy) -> int:
    """The POLICY word a reference ``GuestPolicy`` stands for (bit 17 included)."""
    return abi.GuestPolicy(
        abi_minor=ref.ABIMinor,
        abi_major=ref.ABIMajor,
        smt=ref.SMT,
        migrate_ma=ref.MigrateMA,
        debug=ref.Debug,
        single_socket=ref.SingleSocket,
        cxl_allow=ref.CXLAllowed,
        mem_aes_256_xts=ref.MemAES256XTS,
        rapl_dis=ref.RAPLDis,
        ciphertext_hiding=ref.CipherTextHiding,
        page_swap_disable=ref.PageSwapDisable,
    ).to_u64()


def claims_of(v: VerifiedSnpReport) -> Claims:
    r = v.report
    tcb: dict[str, str] = {}
    for label, version in (
        ("reported", v.reported_tcb),
        ("current", v.current_tcb),
        ("committed", v.committed_tcb),
        ("launch", v.launch_tcb),
    ):
        tcb |= {f"{label}.{k}": str(val) for k, val in version.as_dict().items()}
    details = {
        "product": v.product,
        "version": str(r.version),
        "vmpl": str(r.vmpl),
        "policy": f"0x{r.policy:016x}",
        "platform_info": f"0x{r.platform_info:016x}",
        "chip_id": r.chip_id.hex(),
        "signing_key": v.chain.signing_key,
        "root_sha256": v.chain.root_sha256.hex(),
        "id_key_digest": r.id_key_digest.hex(),
        "firmware": r.current_version,
        "crl_checked": "true" if v.chain.crl_checked else "false",
    }
    if r.launch_mit_vector is not None and r.current_mit_vector is not None:
        details["launch_mit_vector"] = f"0x{r.launch_mit_vector:016x}"
        details["current_mit_vector"] = f"0x{r.current_mit_vector:016x}"
    return Claims(
        tee="snp",
        platform=reference.EMULATED_PLATFORM if v.chain.emulated else v.product,
        policy_hash=r.host_data,
        report_data=r.report_data,
        measurement=r.measurement,
        tcb=tcb,
        details=details,
    )


class _Findings:
    """The findings of one reference set, each a ``policy.*`` code."""

    def __init__(self) -> None:
        self.out: list[Finding] = []

    def add(self, code: str, fld: str, expected: str, got: str, message: str = "") -> None:
        self.out.append(
            Finding(code=f"policy.{code}", field=fld, expected=expected, got=got, message=message)
        )


def _check_platform(v: VerifiedSnpReport, ref: SnpReferenceValues, f: _Findings) -> None:
    """The trust anchor class (the emulator root only under its explicit, insecure platform name), the
    product and the launch measurement."""
    if v.chain.emulated:
        fp = v.chain.root_sha256.hex()
        if not ref.is_emulated:
            f.add(
                "emulated_platform",
                "Platform",
                ref.Platform,
                reference.EMULATED_PLATFORM,
                "evidence from an emulated platform is accepted only under Platform Emulated-SNP",
            )
        elif ref.EmulatorRootFingerprint is None or not hmac.compare_digest(
            ref.EmulatorRootFingerprint.lower(), fp
        ):
            f.add("emulator_root_mismatch", "EmulatorRootFingerprint", ref.EmulatorRootFingerprint or "", fp)
    elif ref.is_emulated:
        f.add(
            "platform_mismatch",
            "Platform",
            ref.Platform,
            v.product,
            "real AMD evidence under an emulated platform",
        )
    if ref.ProductName != v.product:
        f.add("product_mismatch", "ProductName", ref.ProductName, v.product)
    r = v.report
    if not hmac.compare_digest(bytes.fromhex(ref.TrustedMeasurement), r.measurement):
        f.add("measurement_mismatch", "MEASUREMENT", ref.TrustedMeasurement.lower(), r.measurement.hex())


def _check_launch(r: abi.SnpReport, ref: SnpReferenceValues, f: _Findings) -> None:
    """The launch policy the host chose: the exact guest policy (DEBUG refused), platform info and VMPL."""
    want_policy = expected_policy(ref.GuestPolicy)
    if r.guest_policy.debug and not ref.AllowDebugInsecure:
        f.add(
            "debug_enabled",
            "POLICY.DEBUG",
            "false",
            "true",
            "the guest policy allows debugging (decryptable memory)",
        )
    elif r.policy != want_policy:
        f.add("guest_policy_mismatch", "POLICY", f"0x{want_policy:016x}", f"0x{r.policy:016x}")
    for name, bit in _PLATFORM_BITS:
        if getattr(ref.PlatformInfo, name) and not r.platform_info & bit:
            f.add("platform_info_mismatch", f"PLATFORM_INFO.{name}", "set", "clear")
    if r.vmpl != ref.VMPL:
        f.add("vmpl_mismatch", "VMPL", str(ref.VMPL), str(r.vmpl))


def _check_revocation(v: VerifiedSnpReport, ref: SnpReferenceValues, f: _Findings) -> None:
    """``CheckRevocations``: the chain was checked against a CRL of its root (step 9 of verification)."""
    if ref.requires_crl and not v.chain.crl_checked:
        f.add(
            "crl_missing",
            "CheckRevocations",
            "a CRL signed by the ARK",
            "none",
            "the reference values require a revocation check, but no CRL was checked",
        )


def _check_tcb(v: VerifiedSnpReport, ref: SnpReferenceValues, f: _Findings) -> None:
    """The minimum TCB, for the current, committed, reported and launch TCB alike."""
    minimum = ref.MinimumTCB
    mins = {
        "bootloader": minimum.BootloaderVersion,
        "tee": minimum.TEEVersion,
        "snp": minimum.SNPVersion,
        "microcode": minimum.MicrocodeVersion,
    }
    if v.product == "Turin" and minimum.FMCVersion is not None:
        mins["fmc"] = minimum.FMCVersion
    for label, tcb in (
        ("CURRENT_TCB", v.current_tcb),
        ("COMMITTED_TCB", v.committed_tcb),
        ("REPORTED_TCB", v.reported_tcb),
        ("LAUNCH_TCB", v.launch_tcb),
    ):
        got = tcb.as_dict()
        for comp, least in mins.items():
            if got.get(comp, -1) < least:
                f.add("tcb_too_low", f"{label}.{comp}", f">= {least}", str(got.get(comp)))


def _check_mitigations(r: abi.SnpReport, ref: SnpReferenceValues, f: _Findings) -> None:
    """The minimum mitigation vector, at launch and now (reports before v5 carry none)."""
    if ref.MinimumMitigationVector is None:
        return
    need = ref.MinimumMitigationVector
    if r.launch_mit_vector is None or r.current_mit_vector is None:
        if need:
            f.add(
                "mitigation_vector_too_low", "MIT_VECTOR", f"0x{need:016x}", f"absent (report v{r.version})"
            )
        return
    for label, vec in (
        ("LAUNCH_MIT_VECTOR", r.launch_mit_vector),
        ("CURRENT_MIT_VECTOR", r.current_mit_vector),
    ):
        if vec & need != need:
            f.add("mitigation_vector_too_low", label, f"bits 0x{need:016x}", f"0x{vec:016x}")


def _check_identity(r: abi.SnpReport, ref: SnpReferenceValues, f: _Findings) -> None:
    """The allowed chips and ID keys."""
    if ref.AllowedChipIDs != [reference.WILDCARD]:
        chip = r.chip_id
        if not any(hmac.compare_digest(bytes.fromhex(c), chip) for c in ref.AllowedChipIDs):
            f.add("chip_id_not_allowed", "CHIP_ID", "one of AllowedChipIDs", chip.hex())
    if ref.TrustedIDKeyDigests and not any(
        hmac.compare_digest(bytes.fromhex(d), r.id_key_digest) for d in ref.TrustedIDKeyDigests
    ):
        f.add("id_key_not_trusted", "ID_KEY_DIGEST", "one of TrustedIDKeyDigests", r.id_key_digest.hex())


def _check(
    v: VerifiedSnpReport, ref: SnpReferenceValues, expected_report_data: bytes | AnyReportData
) -> list[Finding]:
    f = _Findings()
    _check_platform(v, ref, f)
    _check_launch(v.report, ref, f)
    _check_tcb(v, ref, f)
    _check_mitigations(v.report, ref, f)
    _check_identity(v.report, ref, f)
    _check_revocation(v, ref, f)
    # Constant time: REPORT_DATA binds the nonce and the keys the exchange relies on.
    if not report_data_matches(expected_report_data, v.report.report_data):
        f.add("report_data_mismatch", "REPORT_DATA", "the expected binding", "a different value")
    return f.out


def validate(
    verified: VerifiedSnpReport,
    references: Sequence[SnpReferenceValues],
    *,
    expected_report_data: bytes | AnyReportData,
) -> ValidationResult:
    """Accept with the first matching reference set, or reject with every finding. An empty list rejects."""
    if not isinstance(verified, VerifiedSnpReport):
        raise TypeError("validate() accepts only a VerifiedSnpReport from verify_report()")
    claims = claims_of(verified)
    return first_matching("snp", claims, references, lambda ref: _check(verified, ref, expected_report_data))


def evidence_rejection(error: EvidenceError) -> ValidationResult:
    """A rejected result for evidence that did not verify; its claims are empty because nothing was proved."""
    return result.evidence_rejection("snp", error)


def roots_for(references: Sequence[SnpReferenceValues]) -> frozenset[bytes]:
    """The emulator roots that reference values name explicitly (only under ``Platform: Emulated-SNP``); the
    pinned AMD ARKs are always trusted besides them."""
    return frozenset(
        bytes.fromhex(ref.EmulatorRootFingerprint)
        for ref in references
        if ref.is_emulated and ref.EmulatorRootFingerprint is not None
    )


def verify_and_validate(
    report: bytes,
    certs: Sequence[bytes],
    crl: bytes | None,
    references: Sequence[SnpReferenceValues],
    expected_report_data: bytes,
    now: datetime,
    *,
    verifier: SnpVerifier | None = None,
    product: Product | None = None,
    trailing_ok: bool = False,
) -> ValidationResult:
    """Verify ``report`` (certs are DER) and validate it; evidence failures become rejected results.

    Emulator roots are accepted only when some reference set names one under ``Platform: Emulated-SNP``;
    ``validate`` then also requires the matching set to be that one. ``verifier`` (long-lived, for its
    cache) must trust exactly those roots; without one, a fresh verifier checks everything.
    """
    roots = roots_for(references)
    if verifier is None:
        verifier = SnpVerifier(roots)
    elif verifier.emulator_roots != roots:
        raise ValueError("the verifier's roots do not match the reference values")
    try:
        verified = verifier.verify(report, certs, crl, now=now, product=product, trailing_ok=trailing_ok)
    except EvidenceError as e:
        return evidence_rejection(e)
    return validate(verified, references, expected_report_data=expected_report_data)


__all__ = [
    "ANY_REPORT_DATA",
    "AnyReportData",
    "claims_of",
    "evidence_rejection",
    "expected_policy",
    "roots_for",
    "validate",
    "verify_and_validate",
]
