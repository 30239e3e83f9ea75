"""Intel PCS collateral for TDX: TCB info (v3, id "TDX") and QE identity (v2, id "TD_QE"), and TCB matching.

Signatures cover the **exact bytes of the inner object as transmitted**, so the inner object
is located in the received document by a small JSON scanner and never re-serialised. Its content is then
decoded with msgspec. Unknown fields inside the signed objects are tolerated on purpose: Intel adds fields
over time, and they are covered by the signature; every field we rely on is required and typed.

TCB status follows Intel's QVL (``TcbLevelCheck``/``TdxModuleCheck``, QvE ``isTdxTcbHigherOrEqual``):

1. The first TCB level (in document order, which Intel sorts highest first) whose 16 SGX components are each
   ≤ the PCK certificate's, whose PCESVN ≤ the PCK's, and whose 16 TDX components are each ≤ TEE_TCB_SVN
   (indices 0 and 1 skipped when TEE_TCB_SVN[1] > 0) gives the platform status. No such level: ``NoMatch``.
2. When TEE_TCB_SVN[1] (TDX module major version) > 0, the TDX module identity ``TDX_%02X`` must exist, its
   MRSIGNER must equal MRSIGNERSEAM and SEAMATTRIBUTES under its mask must equal its attributes; its first
   level with isvsvn ≤ TEE_TCB_SVN[0] gives the module status (none: ``NoMatch``). For major version 0 the
   top-level ``tdxModule`` MRSIGNER/attributes are checked instead.
3. The QE identity's first level with isvsvn ≤ the QE report's ISVSVN gives the QE status (none: ``NoMatch``).
4. Module and QE statuses converge into the platform status: ``Revoked`` wins, ``OutOfDate`` downgrades
   ``UpToDate``/``SWHardeningNeeded`` to ``OutOfDate`` and the configuration statuses to
   ``OutOfDateConfigurationNeeded``.

For TDX 1.5 bodies both TEE_TCB_SVN and TEE_TCB_SVN2 are evaluated and the worse result is kept (dcap-qvl
likewise evaluates TEE_TCB_SVN2 as the current TCB). MRSERVICETD is reported only.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final

import msgspec

from contrast.errors import EvidenceError

NO_MATCH: Final = "NoMatch"
UP_TO_DATE: Final = "UpToDate"
OUT_OF_DATE: Final = "OutOfDate"
REVOKED: Final = "Revoked"

_DOC_MAX: Final = 1 << 20


def _bad(msg: str) -> EvidenceError:
    return EvidenceError("bad_collateral", msg)


# --- locating the signed inner object ----------------------------------------------------------------------

_WHITESPACE: Final = b" \t\r\n"
_MEMBERS: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _skip_ws(doc: bytes, i: int) -> int:
    while i < len(doc) and doc[i] in _WHITESPACE:
        i += 1
    return i


def _is_exactly(doc: bytes, members: dict[bytes, bytes]) -> bool:
    """``doc`` is one JSON object whose members are exactly ``members`` (quoted key → value as written),
    each once, in any order, with JSON whitespace between tokens and nothing else."""
    remaining = dict(members)
    i = _skip_ws(doc, 0)
    if not doc.startswith(b"{", i):
        return False
    i += 1
    while remaining:
        i = _skip_ws(doc, i)
        key = next((k for k in remaining if doc.startswith(k, i)), None)
        if key is None:
            return False
        value = remaining.pop(key)
        i = _skip_ws(doc, i + len(key))
        if not doc.startswith(b":", i):
            return False
        i = _skip_ws(doc, i + 1)
        if not doc.startswith(value, i):
            return False
        i = _skip_ws(doc, i + len(value))
        if remaining:
            if not doc.startswith(b",", i):
                return False
            i += 1
    if not doc.startswith(b"}", i):
        return False
    return _skip_ws(doc, i + 1) == len(doc)


def split_signed_document(doc: bytes, body_key: str) -> tuple[bytes, bytes]:
    """Return (exact bytes of ``doc[body_key]``, signature) of ``{"<body_key>": {..}, "signature": ".."}``.

    msgspec validates the document and hands back each top-level value as the exact bytes received
    (``msgspec.Raw``). A JSON object may repeat a key and msgspec keeps one value silently, so the top level
    is then matched token by token against those two members: each must appear exactly once, with its key
    spelled literally (a key written with escapes is refused, fail-closed).
    """
    if len(doc) > _DOC_MAX:
        raise _bad("collateral document too large")
    try:
        doc.decode("utf-8")  # msgspec does not validate UTF-8 inside values it skips as Raw
        members = _MEMBERS.decode(doc)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise _bad(f"collateral is not JSON: {e}") from e
    if set(members) != {body_key, "signature"}:
        raise _bad(f"collateral must be an object with exactly {body_key!r} and 'signature'")
    body, sig_raw = bytes(members[body_key]), bytes(members["signature"])
    try:
        sig_hex = msgspec.json.decode(sig_raw, type=str)
    except msgspec.DecodeError as e:  # a ValidationError: the signature is not a JSON string
        raise _bad("collateral signature must be a string") from e
    if len(sig_hex) != 128:
        raise _bad("collateral signature must be 128 hex digits")
    try:
        sig = bytes.fromhex(sig_hex)
    except ValueError as e:
        raise _bad("collateral signature is not hex") from e
    quoted_key = msgspec.json.encode(body_key)
    if not _is_exactly(doc, {quoted_key: body, b'"signature"': sig_raw}):
        raise _bad(f"collateral must contain {body_key!r} and 'signature' exactly once, keys unescaped")
    return body, sig


# --- typed content -----------------------------------------------------------------------------------------

Hex = Annotated[str, msgspec.Meta(pattern=r"^(?:[0-9a-fA-F]{2})*$")]  # whole bytes only


class _Svn(msgspec.Struct, frozen=True):
    svn: Annotated[int, msgspec.Meta(ge=0, le=255)]


class _PlatformTcb(msgspec.Struct, frozen=True, rename="lower"):
    sgxtcbcomponents: Annotated[list[_Svn], msgspec.Meta(min_length=16, max_length=16)]
    pcesvn: Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
    tdxtcbcomponents: Annotated[list[_Svn], msgspec.Meta(min_length=16, max_length=16)]


class TcbLevel(msgspec.Struct, frozen=True, rename="camel"):
    tcb: _PlatformTcb
    tcb_date: str
    tcb_status: str
    advisory_ids: list[str] = msgspec.field(default_factory=list, name="advisoryIDs")


class _IsvTcb(msgspec.Struct, frozen=True):
    isvsvn: Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]


class IsvTcbLevel(msgspec.Struct, frozen=True, rename="camel"):
    tcb: _IsvTcb
    tcb_date: str
    tcb_status: str
    advisory_ids: list[str] = msgspec.field(default_factory=list, name="advisoryIDs")


class TdxModule(msgspec.Struct, frozen=True, rename="camel"):
    mrsigner: Hex
    attributes: Hex
    attributes_mask: Hex


class TdxModuleIdentity(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    mrsigner: Hex
    attributes: Hex
    attributes_mask: Hex
    tcb_levels: list[IsvTcbLevel]


class TcbInfo(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    version: int
    issue_date: str
    next_update: str
    fmspc: Hex
    pce_id: Hex
    tcb_type: int
    tcb_evaluation_data_number: int
    tdx_module: TdxModule
    tcb_levels: list[TcbLevel]
    tdx_module_identities: list[TdxModuleIdentity] = msgspec.field(default_factory=list)


class QeIdentity(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    version: int
    issue_date: str
    next_update: str
    tcb_evaluation_data_number: int
    miscselect: Hex
    miscselect_mask: Hex
    attributes: Hex
    attributes_mask: Hex
    mrsigner: Hex
    isvprodid: int
    tcb_levels: list[IsvTcbLevel]


def parse_time(s: str, what: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError as e:
        raise _bad(f"{what}: bad timestamp {s!r}") from e
    if t.tzinfo is None:
        raise _bad(f"{what}: timestamp without time zone")
    return t


def decode_tcb_info(inner: bytes) -> TcbInfo:
    try:
        info = msgspec.json.decode(inner, type=TcbInfo)
    except msgspec.DecodeError as e:
        raise _bad(f"TCB info does not decode: {e}") from e
    if info.id != "TDX" or info.version != 3:
        raise _bad(f"TCB info id {info.id!r} version {info.version}: need TDX v3")
    if len(info.fmspc) != 12 or len(info.pce_id) != 4:
        raise _bad("TCB info fmspc/pceId have wrong length")
    if not info.tcb_levels:
        raise _bad("TCB info has no TCB levels")
    parse_time(info.issue_date, "tcbInfo.issueDate")
    parse_time(info.next_update, "tcbInfo.nextUpdate")
    return info


def decode_qe_identity(inner: bytes) -> QeIdentity:
    try:
        ident = msgspec.json.decode(inner, type=QeIdentity)
    except msgspec.DecodeError as e:
        raise _bad(f"QE identity does not decode: {e}") from e
    if ident.id != "TD_QE" or ident.version != 2:
        raise _bad(f"QE identity id {ident.id!r} version {ident.version}: need TD_QE v2")
    if len(ident.mrsigner) != 64 or len(ident.miscselect) != 8 or len(ident.miscselect_mask) != 8:
        raise _bad("QE identity mrsigner/miscselect have wrong length")
    if len(ident.attributes) != 32 or len(ident.attributes_mask) != 32:
        raise _bad("QE identity attributes have wrong length")
    parse_time(ident.issue_date, "enclaveIdentity.issueDate")
    parse_time(ident.next_update, "enclaveIdentity.nextUpdate")
    return ident


# --- matching ----------------------------------------------------------------------------------------------


class TcbEvaluation(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # converged status, or NO_MATCH
    platform_status: str
    module_status: str | None  # None when TEE_TCB_SVN[1] == 0 (no module identity applies)
    qe_status: str
    tcb_date: str | None
    advisory_ids: tuple[str, ...]


def _masked_eq(value: bytes, expected_hex: str, mask_hex: str) -> bool:
    expected, mask = bytes.fromhex(expected_hex), bytes.fromhex(mask_hex)
    if len(expected) != len(value) or len(mask) != len(value):
        return False
    return all((v & m) == e for v, m, e in zip(value, mask, expected, strict=True))


def match_platform_level(
    info: TcbInfo, sgx_comps: tuple[int, ...], pcesvn: int, tee_tcb_svn: bytes
) -> TcbLevel | None:
    skip_module = tee_tcb_svn[1] > 0
    for level in info.tcb_levels:
        if any(c < lv.svn for c, lv in zip(sgx_comps, level.tcb.sgxtcbcomponents, strict=True)):
            continue
        if pcesvn < level.tcb.pcesvn:
            continue
        if any(
            tee_tcb_svn[i] < lv.svn
            for i, lv in enumerate(level.tcb.tdxtcbcomponents)
            if not (skip_module and i < 2)
        ):
            continue
        return level
    return None


def _first_isv_level(levels: list[IsvTcbLevel], isvsvn: int) -> IsvTcbLevel | None:
    for level in levels:
        if isvsvn >= level.tcb.isvsvn:
            return level
    return None


def converge(platform: str, other: str) -> str:
    """Fold a TDX module or QE status (UpToDate/OutOfDate/Revoked) into the platform status (Intel QVL)."""
    if NO_MATCH in (platform, other):
        return NO_MATCH
    if other == REVOKED or platform == REVOKED:
        return REVOKED
    if other == OUT_OF_DATE:
        if platform in ("UpToDate", "SWHardeningNeeded"):
            return OUT_OF_DATE
        if platform in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return platform


_SEVERITY: Final = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)


def worst(a: str, b: str) -> str:
    """The less trustworthy of two statuses; an unknown status counts as ``NoMatch``."""

    def rank(s: str) -> int:
        return _SEVERITY.index(s) if s in _SEVERITY else len(_SEVERITY)

    return a if rank(a) >= rank(b) else b


def _evaluate_svn(
    info: TcbInfo,
    sgx_comps: tuple[int, ...],
    pcesvn: int,
    tee_tcb_svn: bytes,
    mr_signer_seam: bytes,
    seam_attributes: bytes,
) -> tuple[TcbLevel | None, str, str | None, list[str]]:
    level = match_platform_level(info, sgx_comps, pcesvn, tee_tcb_svn)
    platform_status = level.tcb_status if level else NO_MATCH
    advisories = list(level.advisory_ids) if level else []
    module_status: str | None = None
    if tee_tcb_svn[1] > 0:
        wanted = f"TDX_{tee_tcb_svn[1]:02X}"
        ident = next((m for m in info.tdx_module_identities if m.id.upper() == wanted), None)
        if ident is None:
            module_status = NO_MATCH
        else:
            if bytes.fromhex(ident.mrsigner) != mr_signer_seam or not _masked_eq(
                seam_attributes, ident.attributes, ident.attributes_mask
            ):
                raise EvidenceError("tdx_module_mismatch", f"TDX module does not match identity {wanted}")
            mlevel = _first_isv_level(ident.tcb_levels, tee_tcb_svn[0])
            module_status = mlevel.tcb_status if mlevel else NO_MATCH
            if mlevel:
                advisories += mlevel.advisory_ids
    elif bytes.fromhex(info.tdx_module.mrsigner) != mr_signer_seam or not _masked_eq(
        seam_attributes, info.tdx_module.attributes, info.tdx_module.attributes_mask
    ):
        raise EvidenceError(
            "tdx_module_mismatch", "TDX module MRSIGNERSEAM/SEAMATTRIBUTES do not match TCB info"
        )
    return level, platform_status, module_status, advisories


def evaluate_tcb(
    info: TcbInfo,
    qe: QeIdentity,
    *,
    sgx_comps: tuple[int, ...],
    pcesvn: int,
    tee_tcb_svn: bytes,
    mr_signer_seam: bytes,
    seam_attributes: bytes,
    qe_isv_svn: int,
    tee_tcb_svn2: bytes | None = None,
) -> TcbEvaluation:
    """Compute the TCB status per Intel's rules (module docstring). Raises on a TDX module mismatch.

    For TDX 1.5 bodies ``tee_tcb_svn2`` (the current module's SVN) is evaluated as well and the worse of the
    two results is kept, so neither the initial nor the current module TCB can hide the other.
    """
    svns = [tee_tcb_svn] if tee_tcb_svn2 is None else [tee_tcb_svn, tee_tcb_svn2]
    results = [_evaluate_svn(info, sgx_comps, pcesvn, s, mr_signer_seam, seam_attributes) for s in svns]
    qlevel = _first_isv_level(qe.tcb_levels, qe_isv_svn)
    qe_status = qlevel.tcb_status if qlevel else NO_MATCH

    best: TcbEvaluation | None = None
    for level, platform_status, module_status, advisories in results:
        status = platform_status
        if module_status is not None:
            status = converge(status, module_status)
        status = converge(status, qe_status)
        adv = advisories + (list(qlevel.advisory_ids) if qlevel else [])
        ev = TcbEvaluation(
            status=status,
            platform_status=platform_status,
            module_status=module_status,
            qe_status=qe_status,
            tcb_date=level.tcb_date if level else None,
            advisory_ids=tuple(dict.fromkeys(adv)),
        )
        if best is None or worst(best.status, ev.status) == ev.status:
            best = ev
    assert best is not None
    return best


def qe_identity_mismatches(
    qe: QeIdentity, *, mr_signer: bytes, isv_prod_id: int, miscselect: int, attributes: bytes
) -> list[str]:
    """Names of the QE report fields that do not match the QE identity (empty if all match)."""
    bad: list[str] = []
    if bytes.fromhex(qe.mrsigner) != mr_signer:
        bad.append("MRSIGNER")
    if qe.isvprodid != isv_prod_id:
        bad.append("ISVPRODID")
    if miscselect & int(qe.miscselect_mask, 16) != int(qe.miscselect, 16):
        bad.append("MISCSELECT")
    if not _masked_eq(attributes, qe.attributes, qe.attributes_mask):
        bad.append("ATTRIBUTES")
    return bad
