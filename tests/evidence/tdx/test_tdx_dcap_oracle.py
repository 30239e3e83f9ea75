"""Differential oracle: dcap-qvl (Phala, Rust, independently written) against our verifier.

Both get the same quote, collateral, root and time; they must agree on accept/reject and on the TCB status.
Our accept means ``verify`` succeeded *and* the status is one dcap-qvl also returns without error.

Intended differences, each pinned by a test below:

1. TCB status ``NoMatch``: dcap-qvl raises ("No matching TCB level found"); we verify and *report* NoMatch,
   and validation then always rejects it. Compared as: dcap-qvl error ⇔ our status NoMatch.
2. Revoked TCB: dcap-qvl raises ("TCB status is invalid: Revoked"); we report ``Revoked`` and validation
   rejects it under every setting. Compared as: dcap-qvl error ⇔ our status Revoked.
3. Status names: dcap-qvl reports Intel's names as we do; no mapping is needed (checked).
4. Stale collateral is ``collateral.stale`` for us ("retry later") and an error for dcap-qvl: both reject.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import dcap_qvl
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from contrast.errors import ContrastError
from contrast.evidence.tdx import abi
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform, tcb_level
from contrast.evidence.tdx.pcs import split_signed_document
from contrast.evidence.tdx.trust import INTEL_SGX_ROOT_CA, TdxRoots
from contrast.evidence.tdx.verify import TdxCollateral, TdxVerifier
from tests.evidence.tdx.tdx_helpers import EMU_NOW, REAL_NOW, emu_quote

NON_ACCEPTING = {"NoMatch", "Revoked"}  # statuses dcap-qvl turns into an error (differences 1 and 2)


def to_dcap(col: TdxCollateral) -> Any:
    info, info_sig = split_signed_document(col.tcb_info, "tcbInfo")
    qe, qe_sig = split_signed_document(col.qe_identity, "enclaveIdentity")
    return dcap_qvl.QuoteCollateralV3(
        pck_crl_issuer_chain=col.pck_crl_issuer_chain.decode(),
        root_ca_crl=col.root_crl,
        pck_crl=col.pck_crl,
        tcb_info_issuer_chain=col.tcb_signing_chain.decode(),
        tcb_info=info.decode(),
        tcb_info_signature=info_sig,
        qe_identity_issuer_chain=col.tcb_signing_chain.decode(),
        qe_identity=qe.decode(),
        qe_identity_signature=qe_sig,
    )


def dcap(quote: bytes, col: TdxCollateral, root_der: bytes, now: dt.datetime) -> tuple[bool, str]:
    try:
        r = dcap_qvl.verify_with_root_ca(quote, to_dcap(col), root_der, int(now.timestamp()))
    except Exception as e:  # dcap-qvl raises ValueError (and occasionally other types) on any rejection
        return False, str(e)
    return True, str(r.status)


def ours(verifier: TdxVerifier, quote: bytes, col: TdxCollateral, now: dt.datetime) -> tuple[bool, str]:
    try:
        v = verifier.verify(quote, collateral=col, now=now)
    except ContrastError as e:
        return False, e.code
    status = v.tcb_status or ""
    return status not in NON_ACCEPTING, status


def agree(verifier: TdxVerifier, quote: bytes, col: TdxCollateral, root_der: bytes, now: dt.datetime) -> None:
    d_ok, d_status = dcap(quote, col, root_der, now)
    o_ok, o_status = ours(verifier, quote, col, now)
    assert d_ok == o_ok, (d_status, o_status)
    if d_ok:
        assert d_status == o_status


@pytest.fixture(scope="module")
def intel_root_der() -> bytes:
    return INTEL_SGX_ROOT_CA.public_bytes(Encoding.DER)


def test_real_vector_difference_1_no_match(
    intel_verifier: TdxVerifier, real_quote: bytes, real_collateral: TdxCollateral, intel_root_der: bytes
) -> None:
    d_ok, d_msg = dcap(real_quote, real_collateral, intel_root_der, REAL_NOW)
    assert not d_ok
    assert "No matching TCB level" in d_msg
    assert intel_verifier.verify(real_quote, collateral=real_collateral, now=REAL_NOW).tcb_status == "NoMatch"
    agree(intel_verifier, real_quote, real_collateral, intel_root_der, REAL_NOW)


def test_real_vector_stale_difference_4(
    intel_verifier: TdxVerifier, real_quote: bytes, real_collateral: TdxCollateral, intel_root_der: bytes
) -> None:
    later = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    assert not dcap(real_quote, real_collateral, intel_root_der, later)[0]
    assert ours(intel_verifier, real_quote, real_collateral, later) == (False, "collateral.stale")


def test_real_vector_mutations_agree(
    intel_verifier: TdxVerifier, real_quote: bytes, real_collateral: TdxCollateral, intel_root_der: bytes
) -> None:
    # The real vector is always a NoMatch/reject for dcap-qvl, so its mutations only check "no accept".
    rng = random.Random(4)
    for _ in range(150):
        b = bytearray(real_quote)
        b[rng.randrange(0, len(real_quote) - 39)] ^= 1 << rng.randrange(8)
        agree(intel_verifier, bytes(b), real_collateral, intel_root_der, REAL_NOW)


@pytest.mark.parametrize(("version", "body_type"), [(4, 2), (5, 2), (5, 3)])
@pytest.mark.parametrize(
    ("levels", "status"),
    [
        ([tcb_level("UpToDate")], "UpToDate"),
        ([tcb_level("SWHardeningNeeded", advisories=["INTEL-SA-00837"])], "SWHardeningNeeded"),
        ([tcb_level("ConfigurationNeeded")], "ConfigurationNeeded"),
        ([tcb_level("OutOfDate")], "OutOfDate"),
        ([tcb_level("Revoked")], "Revoked"),  # difference 2
        ([tcb_level("UpToDate", pcesvn=99)], "NoMatch"),  # difference 1
        ([tcb_level("UpToDate", sgx=[9] * 16), tcb_level("OutOfDate", sgx=[0] * 16)], "OutOfDate"),
        ([tcb_level("UpToDate", tdx=[3, 0, 9] + [0] * 13)], "NoMatch"),
    ],
)
def test_emulated_statuses_agree(
    platform: EmulatedTdxPlatform,
    emu_verifier: TdxVerifier,
    version: int,
    body_type: int,
    levels: list[dict[str, Any]],
    status: str,
) -> None:
    col = platform.collateral(issued=EMU_NOW - dt.timedelta(days=1), tcb_levels=levels)
    quote = emu_quote(platform, version=version, body_type=body_type)
    assert ours(emu_verifier, quote, col, EMU_NOW)[1] == status
    agree(emu_verifier, quote, col, platform.root_der, EMU_NOW)


def test_emulated_revocation_and_staleness_agree(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier
) -> None:
    quote = emu_quote(platform)
    for kw in ({"revoke_pck": True}, {"fmspc": bytes(6)}):
        col = platform.collateral(issued=EMU_NOW - dt.timedelta(days=1), **kw)
        assert not ours(emu_verifier, quote, col, EMU_NOW)[0]
        agree(emu_verifier, quote, col, platform.root_der, EMU_NOW)
    col = platform.collateral(issued=EMU_NOW - dt.timedelta(days=1))
    agree(emu_verifier, quote, col, platform.root_der, EMU_NOW + dt.timedelta(days=40))


def test_emulated_mutations_agree(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier, emu_collateral: TdxCollateral
) -> None:
    rng = random.Random(5)
    for version, body_type in ((4, 2), (5, 3)):
        quote = emu_quote(platform, version=version, body_type=body_type)
        agree(emu_verifier, quote, emu_collateral, platform.root_der, EMU_NOW)
        q = abi.parse_quote(quote)
        # Everything up to the end of the QE auth data: header, body, signatures, key, QE report.
        end = len(q.signed_region) + 4 + 134 + 450 + len(q.signature_data.cert_data.qe_auth_data)
        for _ in range(120):
            b = bytearray(quote)
            b[rng.randrange(0, end)] ^= 1 << rng.randrange(8)
            agree(emu_verifier, bytes(b), emu_collateral, platform.root_der, EMU_NOW)


def test_emulator_root_under_intel_only_trust_is_rejected_by_us(
    platform: EmulatedTdxPlatform, emu_collateral: TdxCollateral
) -> None:
    # Not a difference: dcap-qvl trusts whatever root it is handed; our Intel verifier pins Intel's root.
    quote = emu_quote(platform)
    assert dcap(quote, emu_collateral, platform.root_der, EMU_NOW)[0]
    assert ours(TdxVerifier(TdxRoots.intel()), quote, emu_collateral, EMU_NOW) == (
        False,
        "evidence.untrusted_root",
    )


def _module(status: str, isvsvn: int, mrsigner: str = "00" * 48) -> dict[str, Any]:
    return {
        "id": "TDX_01",
        "mrsigner": mrsigner,
        "attributes": "0000000000000000",
        "attributesMask": "FFFFFFFFFFFFFFFF",
        "tcbLevels": [{"tcb": {"isvsvn": isvsvn}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": status}],
    }


def _qe_level(status: str, isvsvn: int) -> list[dict[str, Any]]:
    return [{"tcb": {"isvsvn": isvsvn}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": status}]


MODULE_SVN = bytes.fromhex("03010000000000000000000000000000")  # TDX module major version 1, SVN 3
ANY_TDX = [0] * 16


@pytest.mark.parametrize(
    ("tee_tcb_svn", "kwargs", "expected"),
    [
        (None, {"qe_tcb_levels": _qe_level("OutOfDate", 1)}, "OutOfDate"),
        (None, {"qe_tcb_levels": _qe_level("UpToDate", 9)}, "NoMatch"),
        (
            MODULE_SVN,
            {
                "tcb_levels": [tcb_level("UpToDate", tdx=ANY_TDX)],
                "module_identities": [_module("UpToDate", 3)],
            },
            "UpToDate",
        ),
        (
            MODULE_SVN,
            {
                "tcb_levels": [tcb_level("UpToDate", tdx=ANY_TDX)],
                "module_identities": [_module("OutOfDate", 1)],
            },
            "OutOfDate",
        ),
        (
            MODULE_SVN,
            {
                "tcb_levels": [tcb_level("UpToDate", tdx=ANY_TDX)],
                "module_identities": [_module("Revoked", 1)],
            },
            "Revoked",
        ),
        (
            MODULE_SVN,
            {"tcb_levels": [tcb_level("UpToDate", tdx=ANY_TDX)], "module_identities": []},
            "NoMatch",
        ),
        (
            MODULE_SVN,
            {
                "tcb_levels": [tcb_level("ConfigurationNeeded", tdx=ANY_TDX)],
                "module_identities": [_module("OutOfDate", 1)],
            },
            "OutOfDateConfigurationNeeded",
        ),
        (
            MODULE_SVN,
            {
                "tcb_levels": [tcb_level("UpToDate", tdx=ANY_TDX)],
                "module_identities": [_module("UpToDate", 3, "11" * 48)],
            },
            "evidence.tdx_module_mismatch",
        ),
    ],
)
def test_qe_identity_and_tdx_module_statuses_agree(
    platform: EmulatedTdxPlatform,
    emu_verifier: TdxVerifier,
    tee_tcb_svn: bytes | None,
    kwargs: dict[str, Any],
    expected: str,
) -> None:
    col = platform.collateral(issued=EMU_NOW - dt.timedelta(days=1), **kwargs)
    quote = emu_quote(platform) if tee_tcb_svn is None else emu_quote(platform, tee_tcb_svn=tee_tcb_svn)
    assert ours(emu_verifier, quote, col, EMU_NOW)[1] == expected
    agree(emu_verifier, quote, col, platform.root_der, EMU_NOW)


def test_qe_identity_mismatch_agrees(platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier) -> None:
    t = EMU_NOW - dt.timedelta(days=1)
    col = platform.collateral(issued=t)
    fields = {f: getattr(col, f) for f in TdxCollateral.__struct_fields__}
    fields["qe_identity"] = platform.qe_identity_json(issued=t, mr_signer=bytes(32))
    quote = emu_quote(platform)
    assert ours(emu_verifier, quote, TdxCollateral(**fields), EMU_NOW) == (
        False,
        "evidence.qe_identity_mismatch",
    )
    agree(emu_verifier, quote, TdxCollateral(**fields), platform.root_der, EMU_NOW)
