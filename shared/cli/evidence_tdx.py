"""The Intel TDX format for ``contrast evidence show|verify`` (see :mod:`contrast.cli.evidence`).

A file is a TDX quote when its header says version 4 or 5, attestation key type 2 and TEE type 0x81. DCAP
quotes travel in padded buffers, so bytes after ``signature_data_len`` are always ignored and reported as
``trailing_bytes`` (``--trailing`` does not apply to TDX).

``verify`` checks the quote signature, the QE report and its binding, and the PCK chain to the pinned Intel
SGX Root CA (or, only when ``--reference-values`` names it under ``Emulated-TDX``, an emulator root).
Collateral:

* ``--collateral DIR``: PCS collateral under the file names of ``COLLATERAL_FILES`` (as in
  ``vectors/tdx_*``): signatures, CRLs, revocation, freshness at ``--at``, QE identity and the TCB status.
* ``--no-collateral``: authenticity only; the TCB status is not computed and reference values cannot accept.
* neither: rejected with ``collateral.missing``.

Without ``--reference-values`` the TCB status is computed and reported but not enforced; with them it is.
Exit codes as for SNP: 0 accepted, 1 rejected, 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from contrast.cli import evidence as ev
from contrast.cli.exitcodes import UsageError
from contrast.errors import CollateralError, ContrastError, EvidenceError
from contrast.evidence.tdx import abi, validate
from contrast.evidence.tdx.trust import TdxRoots
from contrast.evidence.tdx.verify import COLLATERAL_FILES, TdxCollateral, TdxVerifier, VerifiedTdxQuote


@dataclass(frozen=True)
class TdxVerifyInputs(ev.VerifyInputs):
    """The shared inputs plus the TDX flags (built by :func:`read_verify_options`)."""

    collateral: TdxCollateral | None = None
    no_collateral: bool = False


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """The TDX flags of ``contrast evidence verify``."""
    group = parser.add_mutually_exclusive_group()
    names = ", ".join(COLLATERAL_FILES.values())
    group.add_argument("--collateral", metavar="DIR", help=f"TDX: PCS collateral directory ({names})")
    group.add_argument(
        "--no-collateral", action="store_true", help="TDX: check authenticity only (no TCB status, no policy)"
    )


def load_collateral_dir(directory: Path) -> TdxCollateral:
    """Read the six collateral files (I/O: for the CLI plumbing, never for the verifier)."""
    values: dict[str, bytes] = {}
    for field, name in COLLATERAL_FILES.items():
        path = directory / name
        try:
            if path.stat().st_size > ev.MAX_FILE:
                raise UsageError(f"--collateral {path}: larger than {ev.MAX_FILE} bytes")
            values[field] = path.read_bytes()
        except OSError as e:
            raise UsageError(f"--collateral {path}: {e.strerror or e}") from e
    return TdxCollateral(**values)


def read_verify_options(args: argparse.Namespace, inputs: ev.VerifyInputs) -> TdxVerifyInputs:
    """Extend the shared inputs with the TDX flags, reading the collateral directory if one was given."""
    directory = getattr(args, "collateral", None)
    return TdxVerifyInputs(
        **{f: getattr(inputs, f) for f in ev.VerifyInputs.__dataclass_fields__},
        collateral=load_collateral_dir(Path(directory)) if directory else None,
        no_collateral=bool(getattr(args, "no_collateral", False)),
    )


def describe_quote(q: abi.Quote) -> dict[str, Any]:
    body = q.body
    sd = q.signature_data
    qe = sd.cert_data.qe_report
    out: dict[str, Any] = {
        "version": q.version,
        "att_key_type": q.header.att_key_type,
        "tee_type": f"0x{q.header.tee_type:08x}",
        "qe_vendor_id": q.header.qe_vendor_id.hex(),
        "user_data": q.header.user_data.hex(),
        "body_type": q.body_type,
        "body_size": len(body.raw),
        "tee_tcb_svn": body.tee_tcb_svn.hex(),
        "mr_seam": body.mr_seam.hex(),
        "mr_signer_seam": body.mr_signer_seam.hex(),
        "seam_attributes": body.seam_attributes.hex(),
        "td_attributes": body.td_attributes.hex(),
        "td_attributes_debug": body.debug,
        "xfam": body.xfam.hex(),
        "mr_td": body.mr_td.hex(),
        "mr_config_id": body.mr_config_id.hex(),
        "policy_hash": body.mr_config_id[:32].hex(),
        "mr_owner": body.mr_owner.hex(),
        "mr_owner_config": body.mr_owner_config.hex(),
        **{f"rtmr{i}": r.hex() for i, r in enumerate(body.rtmrs)},
        "report_data": body.report_data.hex(),
        "signature": sd.signature.hex(),
        "attestation_key": sd.attestation_key.hex(),
        "qe_report": {
            "cpu_svn": qe.cpu_svn.hex(),
            "miscselect": f"0x{qe.miscselect:08x}",
            "attributes": qe.attributes.hex(),
            "mr_enclave": qe.mr_enclave.hex(),
            "mr_signer": qe.mr_signer.hex(),
            "isv_prod_id": qe.isv_prod_id,
            "isv_svn": qe.isv_svn,
            "report_data": qe.report_data.hex(),
        },
        "qe_report_signature": sd.cert_data.qe_report_signature.hex(),
        "qe_auth_data": sd.cert_data.qe_auth_data.hex(),
        "pck_chain_bytes": len(sd.cert_data.pck_chain_raw),
        "trailing_bytes": q.trailing,
    }
    if body.is_tdx15:
        out["tee_tcb_svn2"] = (body.tee_tcb_svn2 or b"").hex()
        out["mr_service_td"] = (body.mr_service_td or b"").hex()
    return out


def _verified_json(v: VerifiedTdxQuote) -> dict[str, Any]:
    pck = msgspec.to_builtins(v.pck)
    out: dict[str, Any] = {
        "platform": v.platform,
        "root_sha256": v.root_fingerprint,
        "pck": pck,
        "tcb_status": v.tcb_status if v.collateral else "not evaluated (no collateral)",
    }
    if v.collateral is not None:
        tcb = v.collateral.tcb
        out["tcb"] = msgspec.to_builtins(tcb)
        info = v.collateral.tcb_info
        out["collateral"] = {
            "tcb_info_issue_date": info.issue_date,
            "tcb_info_next_update": info.next_update,
            "tcb_evaluation_data_number": info.tcb_evaluation_data_number,
            "qe_identity_next_update": v.collateral.qe_identity.next_update,
        }
    return out


class TdxFormat:
    name = "tdx"

    def detect(self, data: bytes) -> bool:
        return abi.looks_like_tdx_quote(data)

    def show(self, data: bytes, *, trailing_ok: bool, product: str | None) -> dict[str, Any]:
        return describe_quote(abi.parse_quote(data))

    def verify(self, data: bytes, inputs: ev.VerifyInputs) -> ev.Outcome:
        collateral = inputs.collateral if isinstance(inputs, TdxVerifyInputs) else None
        no_collateral = isinstance(inputs, TdxVerifyInputs) and inputs.no_collateral
        refs = (
            list(ev.load_reference_values(inputs.reference_values).tdx)
            if inputs.reference_values is not None
            else None
        )
        try:
            roots = validate.roots_for(refs) if refs else TdxRoots.intel()
        except ValueError as e:
            raise UsageError(f"reference values: {e}") from e
        try:
            verified = TdxVerifier(roots).verify(
                data, collateral, now=inputs.now, authenticity_only=no_collateral
            )
        except (EvidenceError, CollateralError) as e:
            quote = None
            with contextlib.suppress(ContrastError):  # show what parsed, if anything did
                quote = describe_quote(abi.parse_quote(data))
            return ev.unverified(e, "quote", quote)
        body: dict[str, Any] = {"quote": describe_quote(verified.quote), "verified": _verified_json(verified)}
        if refs is None:
            what = "signatures, PCK chain" + (", collateral and CRLs" if verified.collateral else "")
            msg = f"authentic ({what} verified; TCB status {body['verified']['tcb_status']}, not enforced)"
            return ev.authentic(validate.claims_of(verified), body, msg)
        result = validate.validate(verified, refs, expected_report_data=ev.expected_report_data(inputs))
        return ev.judged(result, "tdx", body, report_data_checked=inputs.report_data is not None)

    # Hooks for the shared command: its parser gains the TDX flags, and its inputs carry them.
    add_verify_arguments = staticmethod(add_verify_arguments)
    read_verify_options = staticmethod(read_verify_options)


FORMAT = TdxFormat()
