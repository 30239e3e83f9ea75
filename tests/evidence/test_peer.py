"""The peer-statement check of docs/protocol.md §1, on emulated SNP and TDX evidence."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from contrast.errors import ContrastError
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.evidence.verifier import Evidence, EvidenceVerifier, OwnIdentity, verify_peer
from contrast.platform.emulated import TDX_DEFAULT_RTMRS, EmulatedSnp, EmulatedTdx

POLICY = hashlib.sha256(b"coordinator policy").digest()
OTHER = hashlib.sha256(b"some workload policy").digest()
RD = hashlib.sha512(b"exchange").digest()
NOW = dt.datetime.now(dt.UTC)


async def _identity(platform: EmulatedSnp | EmulatedTdx, verifier: EvidenceVerifier) -> OwnIdentity:
    own = await platform.evidence(bytes(64))
    claims = verifier.authenticate(own, emulator_root=platform.emulator_root, now=NOW)
    return OwnIdentity.from_claims(claims, emulator_root=platform.emulator_root)


@pytest.fixture(params=["snp", "tdx"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _platform(
    kind: str, snp: EmulatedSnpPlatform, tdx: EmulatedTdxPlatform, policy: bytes, **kw: object
) -> EmulatedSnp | EmulatedTdx:
    if kind == "snp":
        return EmulatedSnp(snp, host_data=policy, **kw)  # type: ignore[arg-type]
    return EmulatedTdx(tdx, policy_hash=policy, **kw)  # type: ignore[arg-type]


async def test_same_code_peer_is_accepted(
    kind: str, snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform
) -> None:
    verifier = EvidenceVerifier()
    me = _platform(kind, snp_emulator, tdx_emulator, POLICY)
    own = await _identity(me, verifier)
    peer = await _platform(kind, snp_emulator, tdx_emulator, POLICY).evidence(RD)
    claims = verify_peer(
        verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW
    )
    assert claims.policy_hash == POLICY


async def test_peer_with_other_policy_is_refused(
    kind: str, snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform
) -> None:
    verifier = EvidenceVerifier()
    own = await _identity(_platform(kind, snp_emulator, tdx_emulator, POLICY), verifier)
    peer = await _platform(kind, snp_emulator, tdx_emulator, OTHER).evidence(RD)
    with pytest.raises(ContrastError) as e:
        verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    assert e.value.code == "policy.policy_unknown"


async def test_peer_with_other_measurement_is_refused(
    kind: str, snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform
) -> None:
    verifier = EvidenceVerifier()
    own = await _identity(_platform(kind, snp_emulator, tdx_emulator, POLICY), verifier)
    if kind == "snp":
        other = EmulatedSnp(snp_emulator, host_data=POLICY, measurement=b"\x07" * 48)
    else:
        other = EmulatedTdx(tdx_emulator, policy_hash=POLICY, rtmrs=(b"\x07" * 48, *TDX_DEFAULT_RTMRS[1:]))
    peer = await other.evidence(RD)
    with pytest.raises(ContrastError) as e:
        verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    assert e.value.code == "policy.measurement_mismatch"


async def test_peer_binding_other_data_is_refused(
    kind: str, snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform
) -> None:
    verifier = EvidenceVerifier()
    own = await _identity(_platform(kind, snp_emulator, tdx_emulator, POLICY), verifier)
    peer = await _platform(kind, snp_emulator, tdx_emulator, POLICY).evidence(b"\x00" * 64)
    with pytest.raises(ContrastError) as e:
        verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    assert e.value.code == "policy.report_data_mismatch"


async def test_peer_from_another_emulator_is_refused(
    snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform
) -> None:
    # A different emulator root (another machine's emulator, or an attacker's) is not our root.
    verifier = EvidenceVerifier()
    own = await _identity(EmulatedSnp(snp_emulator, host_data=POLICY), verifier)
    stranger = EmulatedSnp(EmulatedSnpPlatform.create(), host_data=POLICY)
    peer = await stranger.evidence(RD)
    with pytest.raises(ContrastError) as e:
        verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    assert e.value.family == "evidence"


async def test_tampered_peer_evidence_is_refused(snp_emulator: EmulatedSnpPlatform) -> None:
    verifier = EvidenceVerifier()
    me = EmulatedSnp(snp_emulator, host_data=POLICY)
    own = await _identity(me, verifier)
    good = await me.evidence(RD)
    report = bytearray(good.report)
    report[0xC0] ^= 1  # HOST_DATA: the signature no longer matches
    forged = Evidence(tee="snp", report=bytes(report), certs=good.certs)
    with pytest.raises(ContrastError) as e:
        verify_peer(verifier, forged, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    assert e.value.code == "evidence.bad_signature"


async def test_tee_mismatch(snp_emulator: EmulatedSnpPlatform, tdx_emulator: EmulatedTdxPlatform) -> None:
    verifier = EvidenceVerifier()
    own = await _identity(EmulatedSnp(snp_emulator, host_data=POLICY), verifier)
    peer = await EmulatedTdx(tdx_emulator, policy_hash=POLICY).evidence(RD)
    with pytest.raises(ContrastError) as e:
        verify_peer(verifier, peer, own, allowed_policy_hashes=[POLICY], expected_report_data=RD, now=NOW)
    assert e.value.code == "policy.tee_mismatch"


def test_empty_allow_list_fails_closed() -> None:
    own = OwnIdentity(tee="snp", measurement=b"", policy_hash=b"")
    with pytest.raises(ContrastError) as e:
        verify_peer(
            EvidenceVerifier(),
            Evidence(tee="snp", report=b"x"),
            own,
            allowed_policy_hashes=[],
            expected_report_data=RD,
            now=NOW,
        )
    assert e.value.code == "policy.no_reference_values"
