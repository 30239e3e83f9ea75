"""Join, both sides, in memory: roles come from the manifest, peers need a TCB floor, the root can be pinned.

Every refusal here is a join that the other checks (nonce, evidence, Role: coordinator, binding) accept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization

from contrast.attestation.nonce import NonceAuthority
from contrast.coordinator.manifest_format import Manifest, parse_manifest
from contrast.coordinator.pins import CoordinatorPins, root_ca_sha256
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.crypto.kdf import SeedEngine, generate_seed
from contrast.errors import ContrastError, PolicyError
from contrast.evidence.snp.emulator import DEFAULT_TCB, EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import DEFAULT_TEE_TCB_SVN, EmulatedTdxPlatform, tcb_level
from contrast.evidence.verifier import EvidenceVerifier
from contrast.pki.mesh import new_mesh_authority
from contrast.pki.root import root_certificate
from contrast.pki.service import ServiceRole, service_role
from contrast.platform.base import Platform
from contrast.platform.emulated import EmulatedSnp, EmulatedTdx
from contrast.replica.join import JoinAuthority, JoinResult, answer_join, check_grant, grant, join_nonces
from contrast.wire.v1 import JoinRequest
from tests.services.pipeline import tdx_reference_values

NOW = dt.datetime.now(dt.UTC)
POLICY = {role: hashlib.sha256(f"{role.value} service policy".encode()).digest() for role in ServiceRole}
H_WORKLOAD = hashlib.sha256(b"a workload").digest()
PINS = CoordinatorPins(policies={ServiceRole.MANIFEST: frozenset({POLICY[ServiceRole.MANIFEST]})})
LOW_SNP = msgspec.structs.replace(DEFAULT_TCB["Milan"], snp=DEFAULT_TCB["Milan"].snp - 1)
LOWER_SVN = DEFAULT_TEE_TCB_SVN[:2] + bytes([DEFAULT_TEE_TCB_SVN[2] - 1]) + DEFAULT_TEE_TCB_SVN[3:]


def _manifest(references: dict[str, Any]) -> Manifest:
    policies: dict[str, Any] = {
        POLICY[r].hex(): {"SANs": [], "Role": "coordinator", "CoordinatorRole": r.value} for r in ServiceRole
    }
    policies[H_WORKLOAD.hex()] = {"SANs": ["w"], "WorkloadSecretID": "w"}
    obj = {
        "Policies": policies,
        "ReferenceValues": references,
        "WorkloadOwnerPubKeys": [],
        "SeedshareOwnerPubKeys": [],
    }
    return parse_manifest(json.dumps(obj).encode()).manifest


@dataclass
class World:
    """A ready manifest replica's join authority, in memory."""

    authority: JoinAuthority
    nonces: NonceAuthority
    verifier: EvidenceVerifier
    root_der: bytes

    async def join(
        self, joiner: Platform, role: ServiceRole, *, pins: CoordinatorPins = PINS, asked: str | None = None
    ) -> JoinResult:
        """One join through both sides: the responder's checks and grant, then the joiner's checks."""
        nonce = self.nonces.issue(int(NOW.timestamp() * 1000))
        identity = await CoordinatorIdentity.create(joiner, self.verifier, NOW, nonce=nonce)
        client_nonce = secrets.token_bytes(32)
        req = JoinRequest(
            role=asked or role.value, replica="r-1", statement=identity.statement, client_nonce=client_nonce
        )
        granted, claims, _ = answer_join(
            req, authority=self.authority, nonces=self.nonces, verifier=self.verifier, now=NOW
        )
        reply = grant(req, granted, claims, authority=self.authority, now=NOW)
        return check_grant(
            reply,
            identity=identity,
            role=role,
            client_nonce=client_nonce,
            verifier=self.verifier,
            pins=pins,
            now=NOW,
        )


async def _world(responder: Platform, manifest: Manifest) -> World:
    verifier = EvidenceVerifier()
    engine = SeedEngine(*generate_seed())
    root = root_certificate(engine.root_ca_key())
    authority = JoinAuthority(
        identity=await CoordinatorIdentity.create(responder, verifier, NOW),
        engine=engine,
        mesh=new_mesh_authority(engine.root_ca_key(), root, now=NOW),
        manifest=manifest,
        generation=1,
        transition_hash=b"\x01" * 32,
    )
    return World(authority, join_nonces(engine), verifier, root.public_bytes(serialization.Encoding.DER))


def _snp_refs(emu: EmulatedSnpPlatform, **kw: Any) -> dict[str, Any]:
    return {"snp": [msgspec.to_builtins(emu.reference_values(**kw))], "tdx": []}


@pytest.fixture
async def snp(snp_emulator: EmulatedSnpPlatform) -> World:
    responder = EmulatedSnp(snp_emulator, host_data=POLICY[ServiceRole.MANIFEST])
    # The reference values accept a lower TCB than the responder's, so that only the peer floor is left.
    return await _world(responder, _manifest(_snp_refs(snp_emulator, tcb=LOW_SNP)))


def _on(emu: EmulatedSnpPlatform, role: ServiceRole | None, **kw: Any) -> EmulatedSnp:
    return EmulatedSnp(emu, host_data=POLICY[role] if role else H_WORKLOAD, **kw)


# ---- roles ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", list(ServiceRole), ids=lambda r: f"policy-{r.value}")
@pytest.mark.parametrize("asked", list(ServiceRole), ids=lambda r: f"asks-{r.value}")
async def test_a_join_grants_only_the_role_bound_to_the_attested_policy(
    snp: World, snp_emulator: EmulatedSnpPlatform, bound: ServiceRole, asked: ServiceRole
) -> None:
    if bound is asked:
        result = await snp.join(_on(snp_emulator, bound), asked)
        assert result.role is asked
        assert service_role(result.service_cert) is asked
        return
    with pytest.raises(PolicyError) as e:
        await snp.join(_on(snp_emulator, bound), asked)
    assert e.value.code == "policy.wrong_coordinator_role"


async def test_a_verifier_asking_for_ca_or_manifest_gets_nothing(
    snp: World, snp_emulator: EmulatedSnpPlatform
) -> None:
    """Finding 1: the verifier parses attacker-supplied evidence. Compromised, it used to ask for ``ca`` (root
    CA key, pod-state secret: every workload secret) or ``manifest`` (the seed) and get it."""
    verifier_replica = _on(snp_emulator, ServiceRole.VERIFIER)
    for asked in (ServiceRole.CA, ServiceRole.MANIFEST):
        with pytest.raises(PolicyError) as e:
            await snp.join(verifier_replica, asked)
        assert e.value.code == "policy.wrong_coordinator_role"
    keys = (await snp.join(verifier_replica, ServiceRole.VERIFIER)).keys
    assert keys.nonce_mac_key
    assert [keys.seed, keys.root_key, keys.mesh_key, keys.pod_state_secret] == [b""] * 4


async def test_a_workload_policy_never_joins(snp: World, snp_emulator: EmulatedSnpPlatform) -> None:
    for asked in ServiceRole:
        with pytest.raises(PolicyError) as e:
            await snp.join(_on(snp_emulator, None), asked)
        assert e.value.code == "policy.not_coordinator"


# ---- whose grant a joiner believes ----------------------------------------------------------------------


async def test_only_a_pinned_manifest_policy_grants(snp_emulator: EmulatedSnpPlatform) -> None:
    manifest = _manifest(_snp_refs(snp_emulator))
    joiner = _on(snp_emulator, ServiceRole.CA)
    # A verifier (or CA) replica has no seed, but even if it held a join authority its grant is refused.
    impostor = await _world(_on(snp_emulator, ServiceRole.VERIFIER), manifest)
    with pytest.raises(PolicyError) as e:
        await impostor.join(joiner, ServiceRole.CA)
    assert e.value.code == "policy.policy_unknown"
    genuine = await _world(_on(snp_emulator, ServiceRole.MANIFEST), manifest)
    with pytest.raises(PolicyError) as e:  # nothing pinned: fail closed
        await genuine.join(joiner, ServiceRole.CA, pins=CoordinatorPins())
    assert e.value.code == "policy.no_reference_values"
    assert (await genuine.join(joiner, ServiceRole.CA)).role is ServiceRole.CA


async def test_a_pinned_root_takes_keys_only_from_that_coordinator(
    snp: World, snp_emulator: EmulatedSnpPlatform
) -> None:
    joiner = _on(snp_emulator, ServiceRole.CA)
    ours = CoordinatorPins(policies=PINS.policies, root_ca_sha256=root_ca_sha256(snp.root_der))
    assert (await snp.join(joiner, ServiceRole.CA, pins=ours)).root_cert.public_bytes(
        serialization.Encoding.DER
    ) == snp.root_der
    other = CoordinatorPins(policies=PINS.policies, root_ca_sha256=hashlib.sha256(b"another root").digest())
    with pytest.raises(PolicyError) as e:
        await snp.join(joiner, ServiceRole.CA, pins=other)
    assert e.value.code == "policy.coordinator_root_mismatch"


# ---- the TCB floor, both ways ---------------------------------------------------------------------------


async def test_a_joiner_below_the_responders_tcb_is_refused(
    snp: World, snp_emulator: EmulatedSnpPlatform
) -> None:
    """The manifest's reference values accept the joiner's TCB; the responder's own floor does not."""
    with pytest.raises(PolicyError) as e:
        await snp.join(_on(snp_emulator, ServiceRole.CA, tcb=LOW_SNP), ServiceRole.CA)
    assert e.value.code == "policy.tcb_too_low"


async def test_a_responder_below_the_joiners_tcb_is_refused(snp_emulator: EmulatedSnpPlatform) -> None:
    manifest = _manifest(_snp_refs(snp_emulator, tcb=LOW_SNP))
    old = await _world(_on(snp_emulator, ServiceRole.MANIFEST, tcb=LOW_SNP), manifest)
    with pytest.raises(PolicyError) as e:
        await old.join(_on(snp_emulator, ServiceRole.CA), ServiceRole.CA)
    assert e.value.code == "policy.tcb_too_low"
    # A joiner on the old firmware too is at the responder's level: accepted both ways.
    assert (
        await old.join(_on(snp_emulator, ServiceRole.CA, tcb=LOW_SNP), ServiceRole.CA)
    ).role is ServiceRole.CA


def _tdx(
    emu: EmulatedTdxPlatform, role: ServiceRole, *, svn: bytes = DEFAULT_TEE_TCB_SVN, status: str = ""
) -> EmulatedTdx:
    levels = [tcb_level(status or "UpToDate", tdx=tuple(svn))]
    return EmulatedTdx(
        emu, policy_hash=POLICY[role], tee_tcb_svn=svn, collateral=emu.collateral(tcb_levels=levels)
    )


async def test_tdx_out_of_date_only_where_the_manifest_allows_it(tdx_emulator: EmulatedTdxPlatform) -> None:
    strict = _manifest({"snp": [], "tdx": [tdx_reference_values(tdx_emulator)]})
    lenient_refs = tdx_reference_values(tdx_emulator) | {"AcceptedTCBStatuses": ["UpToDate", "OutOfDate"]}
    lenient = _manifest({"snp": [], "tdx": [lenient_refs]})
    out_of_date = _tdx(tdx_emulator, ServiceRole.CA, status="OutOfDate")

    w = await _world(_tdx(tdx_emulator, ServiceRole.MANIFEST), strict)
    with pytest.raises(ContrastError) as e:
        await w.join(out_of_date, ServiceRole.CA)
    assert e.value.code == "policy.tcb_status"

    w = await _world(_tdx(tdx_emulator, ServiceRole.MANIFEST), lenient)
    assert (await w.join(out_of_date, ServiceRole.CA)).role is ServiceRole.CA
    # Allowed status, lower TCB than the responder's: refused by the floor, not by the reference values.
    lower = _tdx(tdx_emulator, ServiceRole.CA, svn=LOWER_SVN, status="OutOfDate")
    with pytest.raises(PolicyError) as e:
        await w.join(lower, ServiceRole.CA)
    assert e.value.code == "policy.tcb_too_low"

    # The joiner's side: an OutOfDate responder only if its own pins accept that status.
    w = await _world(_tdx(tdx_emulator, ServiceRole.MANIFEST, status="OutOfDate"), lenient)
    joiner = _tdx(tdx_emulator, ServiceRole.CA)
    with pytest.raises(PolicyError) as e:
        await w.join(joiner, ServiceRole.CA)
    assert e.value.code == "policy.tcb_status"
    lenient_pins = CoordinatorPins(policies=PINS.policies, tdx_statuses=frozenset({"UpToDate", "OutOfDate"}))
    assert (await w.join(joiner, ServiceRole.CA, pins=lenient_pins)).role is ServiceRole.CA
