"""``contrast evidence show|verify``: decode and verify raw attestation evidence from a file.

Operators debug evidence with it and users script it, so the output is stable: ``--json`` prints one
JSON object; exit codes are 0 accepted (``show``: decoded), 1 rejected (the reason code and message are
printed, and are in the JSON), 2 usage or I/O error.

Evidence formats are pluggable. ``FORMATS`` lists ``"module:attribute"`` references to objects that satisfy
:class:`EvidenceFormat`; the first whose ``detect`` says yes handles the file. To add a format (TDX), write a
module such as ``contrast/cli/evidence_tdx.py`` exposing ``FORMAT = YourFormat()`` and add one line,
``"contrast.cli.evidence_tdx:FORMAT",``, to ``FORMATS``. A format gets the raw file bytes and a
:class:`VerifyInputs` (already-read certificate, CRL and reference-value bytes) and returns plain JSON-able
data; it raises :class:`~contrast.errors.ContrastError` for a rejection.

A format's module may also define two optional hooks for flags of its own: ``add_verify_arguments(parser)``
(called when ``verify``'s parser is built) and ``read_verify_options(args, inputs) -> VerifyInputs`` (called
when that format was detected, to read its files and extend the inputs).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from contrast.cli.exitcodes import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, UsageError
from contrast.errors import ContrastError, EvidenceError
from contrast.evidence.refvalues import ReferenceValues
from contrast.evidence.result import ANY_REPORT_DATA, AnyReportData, Claims, Finding, ValidationResult
from contrast.evidence.snp import abi, kds, trust, validate, verify

FORMATS: tuple[str, ...] = ("contrast.cli.evidence:SNP_FORMAT", "contrast.cli.evidence_tdx:FORMAT")

MAX_FILE = 1 << 20  # evidence, certificates and reference values are all far smaller


@dataclass(frozen=True)
class VerifyInputs:
    certs: list[bytes]  # contents of every --certs file (PEM bundles or DER), untrusted
    crl: bytes | None
    reference_values: bytes | None  # the JSON file's bytes
    report_data: bytes | None  # the expected REPORT_DATA, or None: not checked
    product: str | None
    now: dt.datetime
    trailing_ok: bool


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    reason: str | None  # the stable code of the first finding when rejected
    message: str
    data: dict[str, Any]  # format-specific JSON-able details (decoded fields, claims, findings)


class EvidenceFormat(Protocol):
    name: str

    def detect(self, data: bytes) -> bool: ...

    def show(self, data: bytes, *, trailing_ok: bool, product: str | None) -> dict[str, Any]: ...

    def verify(self, data: bytes, inputs: VerifyInputs) -> Outcome: ...


def _tcb_json(raw: int, product: kds.Product) -> dict[str, Any]:
    return {"raw": f"0x{raw:016x}", **kds.decode_tcb(raw, product).as_dict()}


def describe_snp(report: abi.SnpReport, product: kds.Product | None) -> dict[str, Any]:
    """Every field of the report, decoded. TCBs use ``product``'s layout (CPUID on v3+, else the caller's)."""
    cpuid_product = None
    if report.cpuid_fam_id is not None and report.cpuid_mod_id is not None:
        cpuid_product = kds.product_from_cpuid(report.cpuid_fam_id, report.cpuid_mod_id)
    layout: kds.Product = product or cpuid_product or "Milan"
    out: dict[str, Any] = {}
    for name in report.__struct_fields__:
        value = getattr(report, name)
        out[name] = value.hex() if isinstance(value, bytes) else value
    out["policy"] = f"0x{report.policy:016x}"
    out["policy_decoded"] = msgspec.to_builtins(report.guest_policy)
    out["platform_info"] = f"0x{report.platform_info:016x}"
    out["platform_info_decoded"] = msgspec.to_builtins(report.platform_info_bits)
    out["signer_info"] = f"0x{report.signer_info:08x}"
    out["signer_info_decoded"] = msgspec.to_builtins(report.signer)
    for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
        out[name] = _tcb_json(getattr(report, name), layout)
    for name in ("launch_mit_vector", "current_mit_vector"):
        if getattr(report, name) is not None:
            out[name] = f"0x{getattr(report, name):016x}"
    out["current_version"] = report.current_version
    out["committed_version"] = report.committed_version
    out["cpuid_product"] = cpuid_product
    out["tcb_layout"] = layout if (product or cpuid_product) else "Milan (assumed: v2 report, no --product)"
    return out


# --- the JSON every format shares ---------------------------------------------------------------------------
def finding_json(f: Finding) -> dict[str, str]:
    return {"code": f.code, "field": f.field, "expected": f.expected, "got": f.got, "message": f.message}


def result_json(result: ValidationResult) -> dict[str, Any]:
    claims = msgspec.to_builtins(result.claims)
    for k in ("policy_hash", "report_data", "measurement"):
        claims[k] = getattr(result.claims, k).hex()
    return {
        "claims": claims,
        "findings": [finding_json(f) for f in result.findings],
        "matched_reference": result.matched_reference,
    }


def load_reference_values(blob: bytes, what: str = "the reference values") -> ReferenceValues:
    """A ``--reference-values`` file: a ``ReferenceValues`` object, or a whole manifest that contains one."""
    try:
        doc = msgspec.json.decode(blob)
    except msgspec.DecodeError as e:
        cut = " (the file ends before the JSON document does)" if "truncated" in str(e) else ""
        raise UsageError(f"{what} is not valid JSON{cut}: {e}") from e
    if isinstance(doc, dict) and "ReferenceValues" in doc:  # a whole manifest
        doc = doc["ReferenceValues"]
    try:
        return msgspec.convert(doc, ReferenceValues)
    except msgspec.ValidationError as e:
        raise UsageError(
            f'{what} holds no valid reference values (a {{"snp": [...], "tdx": [...]}} object, or a manifest '
            f"with ReferenceValues): {e}"
        ) from e


def unverified(error: ContrastError, key: str, decoded: dict[str, Any] | None) -> Outcome:
    """The evidence did not verify: its reason, and what parsed of it (``decoded``, under ``key``)."""
    finding = finding_json(Finding(code=error.code, field="evidence", message=error.message))
    return Outcome(False, error.code, error.message, {key: decoded, "findings": [finding]})


def authentic(claims: Claims, body: dict[str, Any], message: str) -> Outcome:
    """Authentic evidence, judged by no reference values (none were given)."""
    result = ValidationResult(accepted=True, claims=claims)
    return Outcome(True, None, message, {**body, **result_json(result), "policy_checked": False})


def judged(result: ValidationResult, tee: str, body: dict[str, Any], *, report_data_checked: bool) -> Outcome:
    """Authentic evidence, judged by the reference values: accepted by one set, or its first finding."""
    body = {
        **body,
        **result_json(result),
        "policy_checked": True,
        "report_data_checked": report_data_checked,
    }
    if result.accepted:
        return Outcome(True, None, f"accepted by reference values {tee}[{result.matched_reference}]", body)
    first = result.findings[0]
    return Outcome(
        False, first.code, first.message or f"{first.field}: expected {first.expected}, got {first.got}", body
    )


def expected_report_data(inputs: VerifyInputs) -> bytes | AnyReportData:
    return inputs.report_data if inputs.report_data is not None else ANY_REPORT_DATA


# --- the SNP format -----------------------------------------------------------------------------------------
class SnpFormat:
    name = "sev-snp"

    def detect(self, data: bytes) -> bool:
        # A report cut short is still recognised by its header, so that its length is what gets reported
        # (``evidence.bad_length``, as for a report that is too long), not an unknown format.
        if len(data) < abi.OFF_SIGNATURE_ALGO + 4:
            return False
        version = int.from_bytes(data[0:4], "little")
        algo = int.from_bytes(data[abi.OFF_SIGNATURE_ALGO : abi.OFF_SIGNATURE_ALGO + 4], "little")
        return 1 <= version <= 0xFF and algo == abi.SIGNATURE_ALGO_ECDSA_P384_SHA384

    def show(self, data: bytes, *, trailing_ok: bool, product: str | None) -> dict[str, Any]:
        report = abi.parse_report(data, trailing_ok=trailing_ok)
        return describe_snp(report, _product(product))

    def verify(self, data: bytes, inputs: VerifyInputs) -> Outcome:
        product = _product(inputs.product)
        refs = (
            list(load_reference_values(inputs.reference_values).snp)
            if inputs.reference_values is not None
            else None
        )
        certs: list[bytes] = []
        for blob in inputs.certs:
            certs += verify.split_certificates(blob)
        # AMD's ASK/ASVK/ARK bundles ship with the package; they are untrusted bytes like any other, checked
        # against the pinned ARK fingerprints, so adding them only saves the operator from finding them.
        certs += [c for c in trust.all_bundled_der() if c not in certs]
        verifier = verify.SnpVerifier(validate.roots_for(refs or []))
        try:
            verified = verifier.verify(
                data, certs, inputs.crl, now=inputs.now, product=product, trailing_ok=inputs.trailing_ok
            )
        except EvidenceError as e:
            report = None
            with contextlib.suppress(EvidenceError):  # show what parsed, if anything did
                report = describe_snp(abi.parse_report(data, trailing_ok=inputs.trailing_ok), product)
            return unverified(e, "report", report)
        body = {
            "report": describe_snp(verified.report, verified.product),
            "chain": {
                "product": verified.product,
                "signing_key": verified.chain.signing_key,
                "root_sha256": verified.chain.root_sha256.hex(),
                "emulated": verified.chain.emulated,
                "cert_tcb": verified.chain.cert_tcb.as_dict(),
            },
        }
        if refs is None:
            msg = "authentic (signature and chain verified; no reference values given, policy not checked)"
            return authentic(validate.claims_of(verified), body, msg)
        result = validate.validate(verified, refs, expected_report_data=expected_report_data(inputs))
        return judged(result, "snp", body, report_data_checked=inputs.report_data is not None)


def _product(name: str | None) -> kds.Product | None:
    if name is None:
        return None
    for p in kds.PRODUCTS:
        if p.lower() == name.lower():
            return p
    raise UsageError(f"--product: unknown product {name!r} (one of {', '.join(kds.PRODUCTS)})")


SNP_FORMAT = SnpFormat()


# --- plumbing -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Registered:
    fmt: EvidenceFormat
    add_verify_arguments: Callable[[argparse.ArgumentParser], None] | None
    read_verify_options: Callable[[argparse.Namespace, VerifyInputs], VerifyInputs] | None


def _registered() -> list[_Registered]:
    out: list[_Registered] = []
    for ref in FORMATS:
        module_name, _, attr = ref.partition(":")
        module = importlib.import_module(module_name)
        out.append(
            _Registered(
                fmt=getattr(module, attr),
                add_verify_arguments=getattr(module, "add_verify_arguments", None),
                read_verify_options=getattr(module, "read_verify_options", None),
            )
        )
    return out


def _detect(data: bytes) -> _Registered:
    for r in _registered():
        if r.fmt.detect(data):
            return r
    raise EvidenceError("unknown_format", "the file is not evidence of any known format")


def _read(path: str, what: str) -> bytes:
    try:
        p = Path(path)
        if p.stat().st_size > MAX_FILE:
            raise UsageError(f"{what} {path}: larger than {MAX_FILE} bytes")
        return p.read_bytes()
    except OSError as e:
        raise UsageError(f"{what} {path}: {e.strerror or e}") from e


def _parse_at(text: str | None) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.UTC)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise UsageError(f"--at: not an ISO-8601 time: {text!r}") from e
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)  # a bare time means UTC


def _parse_hex(text: str | None, size: int, what: str) -> bytes | None:
    if text is None:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError as e:
        raise UsageError(f"{what}: not hex") from e
    if len(value) != size:
        raise UsageError(f"{what}: expected {size} bytes ({2 * size} hex digits), got {len(value)}")
    return value


def _emit(args: argparse.Namespace, payload: dict[str, Any], lines: Sequence[str]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    else:
        sys.stdout.write("\n".join(lines) + "\n")


def _flatten(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        out: list[str] = []
        for k, v in value.items():
            out += _flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    if isinstance(value, list):
        return [f"{prefix}: {json.dumps(value)}"]
    return [f"{prefix}: {value}"]


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        data = _read(args.file, "evidence")
        trailing_ok = args.trailing == "ok"
        try:
            fmt = _detect(data).fmt
            decoded = fmt.show(data, trailing_ok=trailing_ok, product=args.product)
        except ContrastError as e:
            _emit(args, {"accepted": False, "reason": e.code, "message": e.message}, [f"REJECTED {e}"])
            return EXIT_REJECTED
    except UsageError as e:
        sys.stderr.write(f"contrast evidence show: {e}\n")
        return EXIT_USAGE
    _emit(args, {"format": fmt.name, "report": decoded}, [f"format: {fmt.name}", *_flatten("", decoded)])
    return EXIT_OK


def _finding_text(f: dict[str, str]) -> str:
    """What a finding says: expected and got where it has them, else its message."""
    if f["expected"] or f["got"]:
        return f"expected {f['expected']!r}, got {f['got']!r}"
    return f["message"]


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        data = _read(args.file, "evidence")
        inputs = VerifyInputs(
            certs=[_read(f, "--certs") for f in args.certs or []],
            crl=_read(args.crl, "--crl") if args.crl else None,
            reference_values=_read(args.reference_values, "--reference-values")
            if args.reference_values
            else None,
            report_data=_parse_hex(args.report_data, abi.REPORT_DATA_SIZE, "--report-data"),
            product=args.product,
            now=_parse_at(args.at),
            trailing_ok=args.trailing == "ok",
        )
        if inputs.reference_values is not None:  # a bad file is named before any evidence is looked at
            load_reference_values(inputs.reference_values, f"--reference-values {args.reference_values}")
        try:
            registered = _detect(data)
            fmt = registered.fmt
            if registered.read_verify_options is not None:
                inputs = registered.read_verify_options(args, inputs)
            outcome = fmt.verify(data, inputs)
        except ContrastError as e:
            outcome = Outcome(False, e.code, e.message, {})
            fmt_name = None
        else:
            fmt_name = fmt.name
    except UsageError as e:
        sys.stderr.write(f"contrast evidence verify: {e}\n")
        return EXIT_USAGE
    payload = {
        "format": fmt_name,
        "accepted": outcome.accepted,
        "reason": outcome.reason,
        "message": outcome.message,
        "evaluated_at": inputs.now.isoformat(),
        **outcome.data,
    }
    head = (
        f"ACCEPTED: {outcome.message}"
        if outcome.accepted
        else f"REJECTED {outcome.reason}: {outcome.message}"
    )
    lines = [head]
    for f in outcome.data.get("findings", []):
        text = _finding_text(f)
        lines.append(f"  finding {f['code']} {f['field']}" + (f": {text}" if text else ""))
    if "claims" in outcome.data:
        lines += ["claims:", *("  " + x for x in _flatten("", outcome.data["claims"]))]
    _emit(args, payload, lines)
    return EXIT_OK if outcome.accepted else EXIT_REJECTED


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("evidence", help="decode and verify raw attestation evidence (SEV-SNP, ...)")
    sub = p.add_subparsers(dest="evidence_command", metavar="{show,verify}", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("file", help="the raw evidence (e.g. a 1184-byte SNP report)")
        q.add_argument("--json", action="store_true", help="print one JSON object")
        q.add_argument(
            "--trailing",
            choices=("reject", "ok"),
            default="reject",
            help="what to do with bytes after the evidence (default: reject)",
        )
        q.add_argument("--product", help="product line for v2 SNP reports (Milan, Genoa, Turin)")

    show = sub.add_parser("show", help="print every decoded field")
    common(show)
    show.set_defaults(func=_cmd_show)

    ver = sub.add_parser("verify", help="verify authenticity, and policy with --reference-values")
    common(ver)
    ver.add_argument(
        "--certs", nargs="+", metavar="F", help="PEM or DER files: VCEK/VLEK, ASK/ASVK, ARK bundles"
    )
    ver.add_argument("--crl", metavar="F", help="a CRL (DER or PEM) signed by the ARK")
    ver.add_argument("--reference-values", metavar="F.json", help='ReferenceValues JSON ({"snp": [...]})')
    ver.add_argument("--report-data", metavar="HEX", help="the expected REPORT_DATA (128 hex digits)")
    ver.add_argument("--at", metavar="ISO-8601", help="evaluate certificate and CRL validity at this time")
    for r in _registered():
        if r.add_verify_arguments is not None:
            r.add_verify_arguments(ver)
    ver.set_defaults(func=_cmd_verify)
