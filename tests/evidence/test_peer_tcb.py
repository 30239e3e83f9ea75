"""The TCB floor for Coordinator peers (contrast.evidence.peertcb): never trust a peer on older firmware.

Each refusal here is a peer that every other peer check (measurement, launch policy, policy hash, binding)
accepts: only the floor stands between it and the keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import msgspec
import pytest

from contrast.errors import ContrastError, PolicyError
from contrast.evidence.peertcb import check_peer_tcb
from contrast.evidence.snp.emulator import DEFAULT_TCB, EmulatedSnpPlatform
from contrast.evidence.snp.kds import Product, Tcb
from contrast.evidence.tdx.emulator import DEFAULT_TEE_TCB_SVN, EmulatedTdxPlatform, tcb_level
from contrast.evidence.verifier import Evidence, EvidenceVerifier, OwnIdentity, verify_peer
from contrast.platform.emulated import (
    SNP_DEFAULT_MEASUREMENT,
    TDX_DEFAULT_MRTD,
    TDX_DEFAULT_RTMRS,
    EmulatedTdx,
)

POLICY = hashlib.sha256(b"coordinator policy (tcb floor)").digest()
RD = hashlib.sha512(b"exchange").digest()
NOW = dt.datetime.now(dt.UTC)
MILAN = DEFAULT_TCB["Milan"]  # 4/0/22/213


def _snp(
    emu: EmulatedSnpPlatform,
    product: Product = "Milan",
    *,
    reported: Tcb | None = None,
    current: Tcb | None = None,
    committed: Tcb | None = None,
    launch: Tcb | None = None,
) -> Evidence:
    reported = reported or DEFAULT_TCB[product]
    report = emu.report(
        report_data=RD,
        host_data=POLICY,
        measurement=SNP_DEFAULT_MEASUREMENT,
        product=product,
        tcb=reported,
        current_tcb=current,
        committed_tcb=committed,
        launch_tcb=launch,
    )
    # The VCEK certifies REPORTED_TCB, as KDS would issue it.
    return Evidence(tee="snp", report=report, certs=emu.cert_chain(product, reported))


def _own(verifier: EvidenceVerifier, evidence: Evidence, emulator_root: str) -> OwnIdentity:
    claims = verifier.authenticate(evidence, emulator_root=emulator_root, now=NOW)
    return OwnIdentity.from_claims(claims, emulator_root=emulator_root)


def _check(verifier: EvidenceVerifier, peer: Evidence, own: OwnIdentity, **kw: object) -> None:
    verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW, **kw)  # type: ignore[arg-type]


def test_snp_claims_carry_every_tcb(snp_emulator: EmulatedSnpPlatform) -> None:
    verifier = EvidenceVerifier()
    low = msgspec.structs.replace(MILAN, snp=21)
    claims = verifier.authenticate(
        _snp(snp_emulator, launch=low), emulator_root=snp_emulator.root_fingerprint, now=NOW
    )
    assert claims.tcb["launch.snp"] == "21"
    for label in ("current", "committed", "reported"):
        assert claims.tcb[f"{label}.snp"] == "22"
        assert claims.tcb[f"{label}.microcode"] == "213"


async def test_snp_peer_at_our_tcb_or_above_is_accepted(snp_emulator: EmulatedSnpPlatform) -> None:
    verifier = EvidenceVerifier()
    own = _own(verifier, _snp(snp_emulator), snp_emulator.root_fingerprint)
    _check(verifier, _snp(snp_emulator), own)
    newer = Tcb(bootloader=4, tee=1, snp=23, microcode=214)
    _check(verifier, _snp(snp_emulator, reported=newer), own)
    # Our own floor is our LAUNCH TCB: a replica launched on older firmware (then updated) trusts a peer at
    # the level it was launched on.
    updated = _own(
        verifier,
        _snp(snp_emulator, reported=newer, launch=MILAN),
        snp_emulator.root_fingerprint,
    )
    _check(verifier, _snp(snp_emulator), updated)


@pytest.mark.parametrize("which", ["current", "committed", "reported"])
@pytest.mark.parametrize("component", ["bootloader", "tee", "snp", "microcode"])
async def test_snp_peer_below_our_launch_tcb_is_refused(
    snp_emulator: EmulatedSnpPlatform, which: str, component: str
) -> None:
    """Finding 3: a replica at 4/0/22/213 used to accept a peer at 0/0/0/0. One component of one TCB lower
    than our launch TCB is enough to refuse."""
    verifier = EvidenceVerifier()
    own = _own(
        verifier,
        _snp(snp_emulator, reported=Tcb(bootloader=4, tee=1, snp=22, microcode=213)),
        snp_emulator.root_fingerprint,
    )
    floor = Tcb(bootloader=4, tee=1, snp=22, microcode=213)
    lower = msgspec.structs.replace(floor, **{component: getattr(floor, component) - 1})
    # Every other TCB stays at the floor: only the one under test is lower.
    tcbs = dict.fromkeys(("current", "committed", "reported", "launch"), floor) | {which: lower}
    peer = _snp(snp_emulator, **tcbs)
    with pytest.raises(PolicyError) as e:
        _check(verifier, peer, own)
    assert e.value.code == "policy.tcb_too_low"
    assert which.upper() in e.value.message


async def test_snp_peer_at_zero_is_refused(snp_emulator: EmulatedSnpPlatform) -> None:
    verifier = EvidenceVerifier()
    own = _own(verifier, _snp(snp_emulator), snp_emulator.root_fingerprint)
    zero = Tcb(bootloader=0, tee=0, snp=0, microcode=0)
    with pytest.raises(PolicyError) as e:
        _check(verifier, _snp(snp_emulator, reported=zero), own)
    assert e.value.code == "policy.tcb_too_low"


async def test_snp_turin_fmc_counts(snp_emulator: EmulatedSnpPlatform) -> None:
    verifier = EvidenceVerifier()
    turin = Tcb(fmc=2, bootloader=1, tee=0, snp=2, microcode=71)
    own = _own(verifier, _snp(snp_emulator, "Turin", reported=turin), snp_emulator.root_fingerprint)
    _check(verifier, _snp(snp_emulator, "Turin", reported=turin), own)
    with pytest.raises(PolicyError) as e:
        _check(verifier, _snp(snp_emulator, "Turin", reported=msgspec.structs.replace(turin, fmc=1)), own)
    assert e.value.code == "policy.tcb_too_low"
    assert "fmc" in e.value.message


def test_a_yardstick_without_a_launch_tcb_fails_closed(snp_emulator: EmulatedSnpPlatform) -> None:
    verifier = EvidenceVerifier()
    peer = verifier.authenticate(_snp(snp_emulator), emulator_root=snp_emulator.root_fingerprint, now=NOW)
    with pytest.raises(PolicyError) as e:
        check_peer_tcb(peer, "snp", {k: v for k, v in peer.tcb.items() if not k.startswith("launch.")})
    assert e.value.code == "policy.tcb_too_low"
    with pytest.raises(PolicyError) as e:  # a malformed value is no value
        check_peer_tcb(peer, "snp", peer.tcb | {"launch.snp": "many"})
    assert e.value.code == "policy.tcb_too_low"


# ---- TDX ------------------------------------------------------------------------------------------------

LOWER_SVN = DEFAULT_TEE_TCB_SVN[:2] + bytes([DEFAULT_TEE_TCB_SVN[2] - 1]) + DEFAULT_TEE_TCB_SVN[3:]


def _tdx(emu: EmulatedTdxPlatform, *, tee_tcb_svn: bytes = DEFAULT_TEE_TCB_SVN, status: str = "") -> Evidence:
    levels = [tcb_level("UpToDate")]
    if status:  # the level the peer's TCB matches: the default one, or the lower one, under ``status``
        svn = tuple(tee_tcb_svn)
        levels = [tcb_level("UpToDate", tdx=(*svn[:2], svn[2] + 1, *svn[3:])), tcb_level(status, tdx=svn)]
    quote = emu.quote(
        report_data=RD,
        mr_config_id=POLICY,
        mrtd=TDX_DEFAULT_MRTD,
        rtmrs=TDX_DEFAULT_RTMRS,
        tee_tcb_svn=tee_tcb_svn,
    )
    return Evidence(tee="tdx", report=quote, tdx_collateral=emu.collateral(tcb_levels=levels))


async def _tdx_own(emu: EmulatedTdxPlatform, verifier: EvidenceVerifier) -> OwnIdentity:
    platform = EmulatedTdx(emu, policy_hash=POLICY)
    return _own(verifier, await platform.evidence(bytes(64)), emu.root_fingerprint)


async def test_tdx_peer_up_to_date_at_our_tcb_is_accepted(tdx_emulator: EmulatedTdxPlatform) -> None:
    verifier = EvidenceVerifier()
    own = await _tdx_own(tdx_emulator, verifier)
    _check(verifier, _tdx(tdx_emulator), own)


@pytest.mark.parametrize("status", ["OutOfDate", "SWHardeningNeeded", "OutOfDateConfigurationNeeded"])
async def test_tdx_peer_whose_status_is_not_up_to_date_is_refused(
    tdx_emulator: EmulatedTdxPlatform, status: str
) -> None:
    """Finding 3: only Revoked and NoMatch used to be refused, so OutOfDate passed."""
    verifier = EvidenceVerifier()
    own = await _tdx_own(tdx_emulator, verifier)
    peer = _tdx(tdx_emulator, status=status)
    with pytest.raises(PolicyError) as e:
        _check(verifier, peer, own)
    assert e.value.code == "policy.tcb_status"
    assert status in e.value.message
    # ...unless the manifest explicitly accepts that status (and the TCB itself is not below ours).
    _check(verifier, peer, own, accepted_tdx_statuses=frozenset({status}))


async def test_tdx_peer_below_our_tcb_is_refused_even_with_an_accepted_status(
    tdx_emulator: EmulatedTdxPlatform,
) -> None:
    verifier = EvidenceVerifier()
    own = await _tdx_own(tdx_emulator, verifier)
    peer = _tdx(tdx_emulator, tee_tcb_svn=LOWER_SVN, status="OutOfDate")
    with pytest.raises(PolicyError) as e:
        _check(verifier, peer, own)
    assert e.value.code == "policy.tcb_status"
    with pytest.raises(PolicyError) as e:
        _check(verifier, peer, own, accepted_tdx_statuses=frozenset({"OutOfDate"}))
    assert e.value.code == "policy.tcb_too_low"
    assert "TEE_TCB_SVN[2]" in e.value.message


async def test_tdx_revoked_and_unknown_never_pass(tdx_emulator: EmulatedTdxPlatform) -> None:
    verifier = EvidenceVerifier()
    own = await _tdx_own(tdx_emulator, verifier)
    everything = frozenset({"Revoked", "NoMatch", "OutOfDate"})
    for peer in (_tdx(tdx_emulator, status="Revoked"), _tdx(tdx_emulator, tee_tcb_svn=LOWER_SVN)):
        with pytest.raises(ContrastError) as e:
            _check(verifier, peer, own, accepted_tdx_statuses=everything)
        assert e.value.code == "policy.tcb_status"
    quote = tdx_emulator.quote(
        report_data=RD, mr_config_id=POLICY, mrtd=TDX_DEFAULT_MRTD, rtmrs=TDX_DEFAULT_RTMRS
    )
    with pytest.raises(ContrastError) as e:  # no collateral: nothing to compute a status from
        _check(verifier, Evidence(tee="tdx", report=quote), own, accepted_tdx_statuses=everything)
    assert e.value.code == "evidence.collateral_missing"
    claims = verifier.authenticate(_tdx(tdx_emulator), emulator_root=tdx_emulator.root_fingerprint, now=NOW)
    unknown = msgspec.structs.replace(claims, tcb=claims.tcb | {"status": "collateral missing"})
    with pytest.raises(PolicyError) as e:
        check_peer_tcb(unknown, "tdx", own.tcb, accepted_tdx_statuses=everything)
    assert e.value.code == "policy.tcb_status"


def test_the_floor_compares_like_with_like(snp_emulator: EmulatedSnpPlatform) -> None:
    verifier = EvidenceVerifier()
    peer = verifier.authenticate(_snp(snp_emulator), emulator_root=snp_emulator.root_fingerprint, now=NOW)
    with pytest.raises(PolicyError) as e:
        check_peer_tcb(peer, "tdx", {"tee_tcb_svn": "00" * 16})
    assert e.value.code == "policy.tee_mismatch"
