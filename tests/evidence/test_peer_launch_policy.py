"""A peer launched with a weaker guest policy than ours is refused.

SNP MEASUREMENT does not cover the guest POLICY word, and TDX MRTD does not cover TD_ATTRIBUTES or XFAM: the
(untrusted) host picks them at launch. A host that starts our Coordinator image with DEBUG set gets identical
measurement and policy hash, and can then read the guest's memory. ``verify_peer`` must refuse such a peer.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from contrast.errors import ContrastError
from contrast.evidence.snp import abi as snp_abi
from contrast.evidence.snp.emulator import DEFAULT_POLICY, EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import DEFAULT_TD_ATTRIBUTES, DEFAULT_XFAM, EmulatedTdxPlatform, tcb_level
from contrast.evidence.verifier import Evidence, EvidenceVerifier, OwnIdentity, verify_peer
from contrast.platform.emulated import (
    SNP_DEFAULT_MEASUREMENT,
    TDX_DEFAULT_MRTD,
    TDX_DEFAULT_RTMRS,
    EmulatedSnp,
    EmulatedTdx,
)

POLICY = hashlib.sha256(b"coordinator policy").digest()
RD = hashlib.sha512(b"exchange").digest()
NOW = dt.datetime.now(dt.UTC)


async def _own(platform: EmulatedSnp | EmulatedTdx, verifier: EvidenceVerifier) -> OwnIdentity:
    ev = await platform.evidence(bytes(64))
    claims = verifier.authenticate(ev, emulator_root=platform.emulator_root, now=NOW)
    return OwnIdentity.from_claims(claims, emulator_root=platform.emulator_root)


def _snp_peer(emu: EmulatedSnpPlatform, **kw: int) -> Evidence:
    report = emu.report(report_data=RD, host_data=POLICY, measurement=SNP_DEFAULT_MEASUREMENT, **kw)
    return Evidence(tee="snp", report=report, certs=emu.cert_chain("Milan"))


def _tdx_peer(emu: EmulatedTdxPlatform, **kw: bytes) -> Evidence:
    quote = emu.quote(
        report_data=RD, mr_config_id=POLICY, mrtd=TDX_DEFAULT_MRTD, rtmrs=TDX_DEFAULT_RTMRS, **kw
    )
    return Evidence(tee="tdx", report=quote, tdx_collateral=emu.collateral())


async def test_snp_control_same_launch_policy_is_accepted(snp_emulator: EmulatedSnpPlatform) -> None:
    verifier = EvidenceVerifier()
    own = await _own(EmulatedSnp(snp_emulator, host_data=POLICY), verifier)
    peer = _snp_peer(snp_emulator)
    claims = verify_peer(
        verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW
    )
    assert claims.policy_hash == POLICY


@pytest.mark.parametrize(
    "kw",
    [{"policy": DEFAULT_POLICY | snp_abi.POLICY_DEBUG}, {"vmpl": 1}],
    ids=["debug", "vmpl"],
)
async def test_snp_peer_with_other_launch_policy_is_refused(
    snp_emulator: EmulatedSnpPlatform, kw: dict[str, int]
) -> None:
    verifier = EvidenceVerifier()
    own = await _own(EmulatedSnp(snp_emulator, host_data=POLICY), verifier)
    peer = _snp_peer(snp_emulator, **kw)
    with pytest.raises(ContrastError) as e:
        verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    assert e.value.code in {"policy.debug_enabled", "policy.measurement_mismatch"}


async def test_tdx_control_same_attributes_is_accepted(tdx_emulator: EmulatedTdxPlatform) -> None:
    verifier = EvidenceVerifier()
    own = await _own(EmulatedTdx(tdx_emulator, policy_hash=POLICY), verifier)
    peer = _tdx_peer(tdx_emulator)
    claims = verify_peer(
        verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW
    )
    assert claims.policy_hash == POLICY


def _flip_bit0(b: bytes) -> bytes:
    return bytes([b[0] ^ 1]) + b[1:]


@pytest.mark.parametrize(
    "kw",
    [{"td_attributes": _flip_bit0(DEFAULT_TD_ATTRIBUTES)}, {"xfam": _flip_bit0(DEFAULT_XFAM)}],
    ids=["debug", "xfam"],
)
async def test_tdx_peer_with_other_attributes_is_refused(
    tdx_emulator: EmulatedTdxPlatform, kw: dict[str, bytes]
) -> None:
    verifier = EvidenceVerifier()
    own = await _own(EmulatedTdx(tdx_emulator, policy_hash=POLICY), verifier)
    peer = _tdx_peer(tdx_emulator, **kw)
    with pytest.raises(ContrastError) as e:
        verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    assert e.value.code in {"policy.debug_enabled", "policy.measurement_mismatch"}


async def test_debug_guest_still_trusts_a_non_debug_peer(
    snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform
) -> None:
    """One-sided: a development (debug) pod must still authenticate a hardened Coordinator's answers."""
    verifier = EvidenceVerifier()
    snp_own = await _own(EmulatedSnp(snp_emulator, host_data=POLICY), verifier)
    debug_snp = snp_own.measurement_details | {"policy": f"0x{DEFAULT_POLICY | snp_abi.POLICY_DEBUG:016x}"}
    own = OwnIdentity(
        tee="snp",
        measurement=snp_own.measurement,
        policy_hash=POLICY,
        measurement_details=debug_snp,
        emulator_root=snp_own.emulator_root,
        tcb=snp_own.tcb,
    )
    peer = _snp_peer(snp_emulator)
    verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    debug_peer = _snp_peer(snp_emulator, policy=DEFAULT_POLICY | snp_abi.POLICY_DEBUG)
    verify_peer(verifier, debug_peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)

    tdx_own = await _own(EmulatedTdx(tdx_emulator, policy_hash=POLICY), verifier)
    debug_tdx = tdx_own.measurement_details | {"td_attributes": _flip_bit0(DEFAULT_TD_ATTRIBUTES).hex()}
    own = OwnIdentity(
        tee="tdx",
        measurement=tdx_own.measurement,
        policy_hash=POLICY,
        measurement_details=debug_tdx,
        emulator_root=tdx_own.emulator_root,
        tcb=tdx_own.tcb,
    )
    peer = _tdx_peer(tdx_emulator)
    verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)


async def test_a_thin_yardstick_fails_closed(snp_emulator: EmulatedSnpPlatform) -> None:
    """An OwnIdentity that lacks a launch detail refuses every peer instead of skipping the comparison."""
    verifier = EvidenceVerifier()
    full = await _own(EmulatedSnp(snp_emulator, host_data=POLICY), verifier)
    thin = OwnIdentity(
        tee="snp", measurement=full.measurement, policy_hash=POLICY, emulator_root=full.emulator_root
    )
    peer = _snp_peer(snp_emulator)
    with pytest.raises(ContrastError) as e:
        verify_peer(verifier, peer, thin, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    assert e.value.code == "policy.measurement_mismatch"


@pytest.mark.parametrize("status", ["Revoked", "NoMatch"])
async def test_tdx_peer_on_a_revoked_tcb_is_refused(tdx_emulator: EmulatedTdxPlatform, status: str) -> None:
    """Intel revoked that TCB (or does not know it): its attestation keys may be in anyone's hands."""
    verifier = EvidenceVerifier()
    own = await _own(EmulatedTdx(tdx_emulator, policy_hash=POLICY), verifier)
    level = tcb_level("Revoked") if status == "Revoked" else tcb_level("UpToDate", pcesvn=99)
    quote = tdx_emulator.quote(
        report_data=RD, mr_config_id=POLICY, mrtd=TDX_DEFAULT_MRTD, rtmrs=TDX_DEFAULT_RTMRS
    )
    peer = Evidence(tee="tdx", report=quote, tdx_collateral=tdx_emulator.collateral(tcb_levels=[level]))
    with pytest.raises(ContrastError) as e:
        verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    assert e.value.code == "policy.tcb_status"
