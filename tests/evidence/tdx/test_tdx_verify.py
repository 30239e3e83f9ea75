"""Verification: the real SPR vector with its PCS collateral, byte flips, chains, CRLs and freshness."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import msgspec
import pytest

from contrast.errors import CollateralError, ContrastError, EvidenceError
from contrast.evidence.tdx import abi
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform, tcb_level
from contrast.evidence.tdx.trust import INTEL_SGX_ROOT_CA_SHA256, TdxRoots
from contrast.evidence.tdx.verify import TdxCollateral, TdxVerifier
from tests.evidence.tdx.tdx_helpers import EMU_NOW, REAL_NOW, emu_quote


def _code(fn: Any) -> str:
    with pytest.raises(ContrastError) as e:
        fn()
    return e.value.code


def test_real_vector_verifies_with_collateral_and_reports_no_match(
    intel_verifier: TdxVerifier, real_quote: bytes, real_collateral: TdxCollateral, expected: dict[str, Any]
) -> None:
    v = intel_verifier.verify(real_quote, collateral=real_collateral, now=REAL_NOW)
    assert v.platform == "TDX"
    assert v.root_fingerprint == INTEL_SGX_ROOT_CA_SHA256
    ext = expected["decoded"]["pck_extensions"]
    assert v.pck.fmspc.hex() == ext["fmspc"]
    assert v.pck.pceid.hex() == ext["pceid"]
    assert v.pck.pcesvn == ext["pcesvn"]
    assert list(v.pck.tcb_comp_svns) == ext["sgx_tcb_comp_svn"]
    assert v.pck.cpusvn.hex() == ext["cpusvn"]
    assert v.pck.ppid.hex() == ext["ppid"]
    assert v.pck.piid is not None
    assert v.pck.piid.hex() == ext["platform_instance_id"]
    assert v.pck.sgx_type == 1  # Scalable
    assert len(v.pck_chain) == 3
    assert v.collateral is not None
    # The README: PCK TCB 3,3,2,2,2,1,0,2 / PCESVN 11 matches no level of this 2023 TCB info.
    assert v.tcb_status == expected["decoded"]["tcb_info"]["matched_tcb_status"] == "NoMatch"
    assert v.collateral.tcb.qe_status == expected["decoded"]["qe_identity"]["matched_tcb_status"]
    assert v.collateral.tcb_info.tcb_evaluation_data_number == 15


def test_without_collateral_verification_stops_at_the_chain(
    intel_verifier: TdxVerifier, real_quote: bytes
) -> None:
    assert (
        _code(lambda: intel_verifier.verify(real_quote, collateral=None, now=REAL_NOW))
        == "collateral.missing"
    )
    v = intel_verifier.verify(real_quote, collateral=None, now=REAL_NOW, authenticity_only=True)
    assert v.collateral is None
    assert v.tcb_status is None


def test_roots_are_never_mixed() -> None:
    with pytest.raises(ValueError, match="mixed"):
        TdxRoots.emulated(INTEL_SGX_ROOT_CA_SHA256)
    with pytest.raises(ValueError):  # Intel's platform trusts exactly one root
        TdxRoots(frozenset({"00" * 32, INTEL_SGX_ROOT_CA_SHA256}), "TDX")
    assert TdxRoots.intel().fingerprints == {INTEL_SGX_ROOT_CA_SHA256}


def _regions(quote: bytes) -> dict[str, range]:
    q = abi.parse_quote(quote)
    signed = len(q.signed_region)
    sd = signed + 4
    cd = sd + 134
    return {
        "header": range(0, 48),
        "body": range(48, signed),
        "signature": range(sd, sd + 64),
        "attestation_key": range(sd + 64, sd + 128),
        "qe_report": range(cd, cd + 384),
        "qe_report_signature": range(cd + 384, cd + 448),
        "qe_auth_data": range(cd + 450, cd + 450 + len(q.signature_data.cert_data.qe_auth_data)),
    }


@pytest.mark.parametrize(
    "region",
    ["header", "body", "signature", "attestation_key", "qe_report", "qe_report_signature", "qe_auth_data"],
)
def test_every_single_byte_flip_is_rejected_real(
    intel_verifier: TdxVerifier, real_quote: bytes, real_collateral: TdxCollateral, region: str
) -> None:
    for i in _regions(real_quote)[region]:
        b = bytearray(real_quote)
        b[i] ^= 0x01
        with pytest.raises(ContrastError) as e:
            intel_verifier.verify(bytes(b), collateral=real_collateral, now=REAL_NOW)
        assert e.value.code.startswith("evidence."), (region, i, e.value.code)


def test_mr_td_flip_is_a_signature_failure(intel_verifier: TdxVerifier, real_quote: bytes) -> None:
    for i in range(48 + abi.TD_MR_TD[0], 48 + abi.TD_MR_TD[0] + 48):
        b = bytearray(real_quote)
        b[i] ^= 0x80
        code = _code(
            lambda b=b: intel_verifier.verify(bytes(b), collateral=None, now=REAL_NOW, authenticity_only=True)
        )
        assert code == "evidence.bad_signature"


@pytest.mark.parametrize(("version", "body_type"), [(4, 2), (5, 2), (5, 3)])
def test_every_single_byte_flip_is_rejected_emulated(
    platform: EmulatedTdxPlatform,
    emu_verifier: TdxVerifier,
    emu_collateral: TdxCollateral,
    version: int,
    body_type: int,
) -> None:
    quote = emu_quote(platform, version=version, body_type=body_type)
    assert emu_verifier.verify(quote, collateral=emu_collateral, now=EMU_NOW).tcb_status == "UpToDate"
    for region, rng in _regions(quote).items():
        for i in rng[:: 7 if region in ("body", "qe_report") else 1]:
            b = bytearray(quote)
            b[i] ^= 0x40
            with pytest.raises(EvidenceError):
                emu_verifier.verify(bytes(b), collateral=emu_collateral, now=EMU_NOW)


def test_specific_failure_codes(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier, emu_collateral: TdxCollateral
) -> None:
    quote = emu_quote(platform)
    r = _regions(quote)

    def flip(i: int) -> bytes:
        b = bytearray(quote)
        b[i] ^= 1
        return bytes(b)

    def verify(q: bytes) -> str:
        return _code(lambda: emu_verifier.verify(q, collateral=emu_collateral, now=EMU_NOW))

    assert verify(flip(r["signature"][5])) == "evidence.bad_signature"
    assert verify(flip(r["qe_report_signature"][5])) == "evidence.bad_qe_report_signature"
    assert verify(flip(r["qe_auth_data"][0])) == "evidence.qe_report_binding"
    assert verify(flip(r["qe_report"][320])) == "evidence.qe_report_binding"  # REPORTDATA
    assert verify(flip(r["qe_report"][0])) == "evidence.bad_qe_report_signature"  # CPUSVN


def test_chain_ending_at_another_root_is_untrusted(
    platform: EmulatedTdxPlatform,
    intel_verifier: TdxVerifier,
    emu_collateral: TdxCollateral,
    real_quote: bytes,
) -> None:
    quote = emu_quote(platform)
    code = _code(lambda: intel_verifier.verify(quote, collateral=emu_collateral, now=EMU_NOW))
    assert code == "evidence.untrusted_root"
    other = TdxVerifier(TdxRoots.emulated("ab" * 32))
    assert _code(lambda: other.verify(quote, collateral=None, now=EMU_NOW, authenticity_only=True)) == (
        "evidence.untrusted_root"
    )
    # A real Intel quote under an emulator-only verifier is refused too.
    assert _code(lambda: other.verify(real_quote, collateral=None, now=REAL_NOW, authenticity_only=True)) == (
        "evidence.untrusted_root"
    )


def test_pck_chain_from_another_platform_fails_the_qe_signature(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier
) -> None:
    other = EmulatedTdxPlatform.create(now=EMU_NOW - dt.timedelta(days=2))
    # Swap only the PCK chain; the quote signature (header ‖ body) stays valid.
    q = abi.parse_quote(emu_quote(platform))
    sd = q.signature_data
    cd = msgspec.structs.replace(sd.cert_data, pck_chain_raw=other.pck_chain_pem)
    swapped = msgspec.structs.replace(q, signature_data=msgspec.structs.replace(sd, cert_data=cd)).to_bytes()
    assert _code(
        lambda: emu_verifier.verify(swapped, collateral=None, now=EMU_NOW, authenticity_only=True)
    ) == ("evidence.untrusted_root")
    both = TdxVerifier(TdxRoots.emulated(platform.root_fingerprint, other.root_fingerprint))
    assert _code(lambda: both.verify(swapped, collateral=None, now=EMU_NOW, authenticity_only=True)) == (
        "evidence.bad_qe_report_signature"
    )


def test_collateral_for_another_root_is_rejected(
    platform: EmulatedTdxPlatform, real_collateral: TdxCollateral
) -> None:
    other = EmulatedTdxPlatform.create(now=EMU_NOW - dt.timedelta(days=2))
    both = TdxVerifier(TdxRoots.emulated(platform.root_fingerprint, other.root_fingerprint))
    quote = emu_quote(platform)
    code = _code(lambda: both.verify(quote, collateral=other.collateral(issued=EMU_NOW), now=EMU_NOW))
    assert code == "evidence.untrusted_root"
    assert (
        _code(lambda: both.verify(quote, collateral=real_collateral, now=EMU_NOW))
        == "evidence.untrusted_root"
    )


def test_time_windows(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier, emu_collateral: TdxCollateral
) -> None:
    quote = emu_quote(platform)
    assert _code(
        lambda: emu_verifier.verify(quote, collateral=emu_collateral, now=EMU_NOW + dt.timedelta(days=60))
    ) == ("collateral.stale")
    before = platform.created - dt.timedelta(days=1)
    assert _code(lambda: emu_verifier.verify(quote, collateral=None, now=before, authenticity_only=True)) == (
        "evidence.chain_invalid"
    )
    with pytest.raises(ValueError, match="timezone"):
        emu_verifier.verify(quote, collateral=None, now=dt.datetime(2026, 1, 1), authenticity_only=True)


def test_real_collateral_goes_stale(
    intel_verifier: TdxVerifier, real_quote: bytes, real_collateral: TdxCollateral
) -> None:
    late = dt.datetime(2023, 7, 20, tzinfo=dt.UTC)
    assert (
        _code(lambda: intel_verifier.verify(real_quote, collateral=real_collateral, now=late))
        == "collateral.stale"
    )


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"revoke_pck": True}, "evidence.revoked"),
        ({"revoke_pck_ca": True}, "evidence.revoked"),
        ({"revoke_root": True}, "evidence.revoked"),  # as dcap-qvl: a root listed in its own CRL
        ({"fmspc": bytes.fromhex("000000000001")}, "evidence.collateral_mismatch"),
    ],
)
def test_collateral_rejections(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier, kwargs: dict[str, Any], code: str
) -> None:
    col = platform.collateral(issued=EMU_NOW - dt.timedelta(days=1), **kwargs)
    assert _code(lambda: emu_verifier.verify(emu_quote(platform), collateral=col, now=EMU_NOW)) == code


def test_tampered_collateral_documents(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier, emu_collateral: TdxCollateral
) -> None:
    quote = emu_quote(platform)

    def with_(**kw: bytes) -> str:
        fields = {f: getattr(emu_collateral, f) for f in TdxCollateral.__struct_fields__}
        fields.update(kw)
        return _code(lambda: emu_verifier.verify(quote, collateral=TdxCollateral(**fields), now=EMU_NOW))

    info = emu_collateral.tcb_info
    assert with_(tcb_info=info.replace(b'"UpToDate"', b'"UpToDatf"', 1)) == "evidence.bad_collateral"
    assert with_(tcb_info=info.replace(b'"tcbType":0', b'"tcbType": 0', 1)) == "evidence.bad_collateral"
    assert with_(tcb_info=info[:-1] + b',"signature":"00"}') == "evidence.bad_collateral"  # duplicate member
    assert (
        with_(qe_identity=emu_collateral.qe_identity.replace(b'"TD_QE"', b'"TD_QF"'))
        == "evidence.bad_collateral"
    )
    assert with_(pck_crl=emu_collateral.pck_crl[:-3] + b"\x00\x00\x00") == "evidence.bad_collateral"
    assert with_(root_crl=emu_collateral.pck_crl) == "evidence.bad_collateral"  # wrong issuer
    assert with_(tcb_signing_chain=emu_collateral.pck_crl_issuer_chain) == "evidence.chain_invalid"
    assert with_(pck_crl_issuer_chain=b"not a chain") == "evidence.chain_invalid"


def test_qe_identity_mismatch(platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier) -> None:
    t = EMU_NOW - dt.timedelta(days=1)
    col = platform.collateral(issued=t)
    bad_qe = platform.qe_identity_json(issued=t, mr_signer=bytes(32))
    fields = {f: getattr(col, f) for f in TdxCollateral.__struct_fields__} | {"qe_identity": bad_qe}
    code = _code(
        lambda: emu_verifier.verify(emu_quote(platform), collateral=TdxCollateral(**fields), now=EMU_NOW)
    )
    assert code == "evidence.qe_identity_mismatch"


@pytest.mark.parametrize(
    ("levels", "qe_levels", "status"),
    [
        ([tcb_level("UpToDate")], None, "UpToDate"),
        ([tcb_level("SWHardeningNeeded", advisories=["INTEL-SA-00837"])], None, "SWHardeningNeeded"),
        ([tcb_level("ConfigurationNeeded")], None, "ConfigurationNeeded"),
        ([tcb_level("OutOfDate")], None, "OutOfDate"),
        ([tcb_level("Revoked")], None, "Revoked"),
        ([tcb_level("UpToDate", pcesvn=99)], None, "NoMatch"),
        ([tcb_level("UpToDate", sgx=[9] * 16), tcb_level("OutOfDate", sgx=[0] * 16)], None, "OutOfDate"),
        ([tcb_level("UpToDate", tdx=[9] * 16)], None, "NoMatch"),
        (
            [tcb_level("UpToDate")],
            [{"tcb": {"isvsvn": 9}, "tcbDate": "x", "tcbStatus": "UpToDate"}],
            "NoMatch",
        ),
        (
            [tcb_level("ConfigurationNeeded")],
            [
                {"tcb": {"isvsvn": 9}, "tcbDate": "x", "tcbStatus": "UpToDate"},
                {"tcb": {"isvsvn": 1}, "tcbDate": "x", "tcbStatus": "OutOfDate"},
            ],
            "OutOfDateConfigurationNeeded",
        ),
    ],
)
def test_tcb_status_is_computed_not_enforced(
    platform: EmulatedTdxPlatform,
    emu_verifier: TdxVerifier,
    levels: list[dict[str, Any]],
    qe_levels: list[dict[str, Any]] | None,
    status: str,
) -> None:
    col = platform.collateral(
        issued=EMU_NOW - dt.timedelta(days=1), tcb_levels=levels, qe_tcb_levels=qe_levels
    )
    v = emu_verifier.verify(emu_quote(platform), collateral=col, now=EMU_NOW)
    assert v.tcb_status == status


def test_tdx15_uses_the_worse_of_both_module_svns(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier, emu_collateral: TdxCollateral
) -> None:
    quote = emu_quote(platform, version=5, body_type=3, tee_tcb_svn2=bytes(16))
    assert emu_verifier.verify(quote, collateral=emu_collateral, now=EMU_NOW).tcb_status == "NoMatch"


def test_caches_do_not_change_results(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier, emu_collateral: TdxCollateral
) -> None:
    quote = emu_quote(platform)
    a = emu_verifier.verify(quote, collateral=emu_collateral, now=EMU_NOW)  # the session's warm verifier
    b = TdxVerifier(emu_verifier.roots).verify(quote, collateral=emu_collateral, now=EMU_NOW)  # a cold one
    assert a == b
    # A cached, signature-checked chain is still re-checked against the time.
    with pytest.raises(CollateralError):
        emu_verifier.verify(quote, collateral=emu_collateral, now=EMU_NOW + dt.timedelta(days=45))


def test_regression_invalid_x509_version_in_a_collateral_chain(
    platform: EmulatedTdxPlatform, emu_verifier: TdxVerifier, emu_collateral: TdxCollateral
) -> None:
    # Found by the long fuzz campaign: cryptography raises InvalidVersion, which is not a ValueError.
    pem = emu_collateral.pck_crl_issuer_chain
    first, rest = pem.split(b"-----END CERTIFICATE-----\n", 1)
    der = bytearray(base64.b64decode(b"".join(first.splitlines()[1:])))
    assert der[8:13] == b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2 (X.509 v3)
    der[12] = 0x0A
    bad = (
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(bytes(der))
        + b"-----END CERTIFICATE-----\n"
        + rest
    )
    fields = {f: getattr(emu_collateral, f) for f in TdxCollateral.__struct_fields__} | {
        "pck_crl_issuer_chain": bad
    }
    code = _code(
        lambda: TdxVerifier(emu_verifier.roots).verify(
            emu_quote(platform), collateral=TdxCollateral(**fields), now=EMU_NOW
        )
    )
    assert code == "evidence.chain_invalid"
