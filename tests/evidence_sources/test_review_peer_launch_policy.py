"""Security review: a peer launched with a weaker guest policy than ours is refused.

SNP MEASUREMENT does not cover the guest POLICY word, and TDX MRTD does not cover TD_ATTRIBUTES or XFAM: the
(untrusted) host picks them at launch. A host that starts our Coordinator image with DEBUG set gets identical
measurement and policy hash, and can then read the guest's memory. ``verify_peer`` must refuse such a peer.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from contrast.attest.evidence import Evidence, EvidenceVerifier, OwnIdentity, verify_peer
from contrast.attest.snp import abi as snp_abi
from contrast.attest.snp.emulator import DEFAULT_POLICY, EmulatedSnpPlatform
from contrast.attest.tdx.emulator import DEFAULT_TD_ATTRIBUTES, DEFAULT_XFAM, EmulatedTdxPlatform
from contrast.errors import ContrastError
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
    claims = verify_peer(
        verifier, _snp_peer(snp_emulator), own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW
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
    claims = verify_peer(
        verifier, _tdx_peer(tdx_emulator), own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW
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
