"""A verifier's certificate counts only while the manifest still allows its Coordinator policy (R2), and a
forged entry planted in KV ``results`` does not stop a genuine issuance (R3). Real nats-server, real CA."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time

import msgspec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.msg import Msg

from contrast import subjects
from contrast.attestation.bundle import PURPOSE_ISSUED, Expectation, open_result
from contrast.attestation.verdict import sign_verdict
from contrast.ca.service import HEAD_MAX_AGE
from contrast.coordinator.statement import transcript
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.verifier import EvidenceVerifier, OwnIdentity
from contrast.pki.root import root_certificate
from contrast.pki.service import ServiceRole, issue_service_cert, verify_service_cert
from contrast.replica.membership import Membership
from contrast.runtime.kv import NatsKeyValue
from contrast.runtime.natsserver import NatsServer
from contrast.testing.fixture import FixtureKeySource
from contrast.wire.v1 import (
    AttestRequest,
    AttestResult,
    IssuedResult,
    SignedEnvelope,
    SignedVerdict,
    Verdict,
    decoder,
    encode,
    encode_deterministic,
)
from tests.services.evil_bus import EvilBus, build_request, new_request_id
from tests.services.pipeline import (
    H_CA,
    H_COORD,
    H_DB,
    H_VERIFIER,
    INITIALIZER_PINS,
    Pipeline,
    history_kv,
    manifest_doc,
    pipeline,
    set_manifest,
)

# A second Coordinator image (think: the previous release) that an update later withdraws.
POLICY_OLD = b"package contrast.coordinator\n# the vulnerable release\ndefault allow := true\n"
H_OLD = hashlib.sha256(POLICY_OLD).digest()


async def _set_manifest(p: Pipeline, *, with_old: bool) -> None:
    raw, policies = manifest_doc(p.emulator)
    if with_old:
        obj = json.loads(raw)
        obj["Policies"][H_OLD.hex()] = {"SANs": [], "Role": "coordinator", "CoordinatorRole": "verifier"}
        raw = json.dumps(obj, indent=2).encode()
        policies = {**policies, H_OLD.hex(): POLICY_OLD}
    await set_manifest(p.nc, p.state, raw, policies)
    await p.nc.publish(subjects.EVENT_MANIFEST_UPDATED, b"a hint; replicas re-read the history")
    await asyncio.sleep(HEAD_MAX_AGE + 0.2)  # the CA re-reads the authenticated head at least this often


async def _verdict(p: Pipeline, req: AttestRequest, rid: str) -> Verdict:
    head = await p.state.history(await history_kv(p.nc)).read_latest()
    assert head is not None
    return Verdict(
        request_id=rid,
        request_digest=b"\x00" * 32,
        accepted=True,
        tee="snp",
        policy_hash=H_DB,
        tls_public_key=req.tls_public_key,
        hpke_public_key=req.hpke_public_key,
        generation=head.generation,
        transition_hash=head.transition_hash,
        issued_at_ms=int(time.time() * 1000),
        verifier="v",
    )


async def _deliver(p: Pipeline, evil: EvilBus, signed: SignedVerdict, rid: str) -> AttestResult | str:
    """Put ``signed`` on the verdict stream; the CA's answer, or the code it dead-lettered it with."""
    answers: list[bytes] = []

    async def on_result(msg: Msg) -> None:
        answers.append(bytes(msg.data))

    sub = await evil.nc.subscribe(subjects.attest_result(rid), cb=on_result)
    try:
        await evil.nc.jetstream().publish(
            subjects.ATTEST_VERIFIED, encode(signed), headers={"Nats-Msg-Id": rid}
        )
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if answers:
                return decoder(AttestResult).decode(answers[0])
            letters = [d for d in await evil.dead_letters() if d.msg_id == rid]
            if letters:  # the CA publishes an answer, had there been one, before its dead letter
                assert not answers, "a refused verdict got an answer"
                return letters[0].code
            await asyncio.sleep(0.05)
    finally:
        await sub.unsubscribe()
    raise AssertionError("the verdict was neither answered nor dead-lettered")


async def _old_verifier(p: Pipeline) -> Membership:
    # FixtureKeySource certifies the policy hash of the joiner's own verified evidence, as a real join does.
    m = await FixtureKeySource(p.state, None, "old").join(
        p.nc, p.platform(H_OLD), ServiceRole.VERIFIER, EvidenceVerifier()
    )
    der = m.service_cert.public_bytes(serialization.Encoding.DER)
    ident = verify_service_cert(der, m.root_cert, ServiceRole.VERIFIER, dt.datetime.now(dt.UTC))
    assert ident.policy_hash == H_OLD
    return m


async def test_verifier_of_a_withdrawn_coordinator_policy_signs_nothing(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator) as p:
        evil = await EvilBus.connect(p.url)
        try:
            await _set_manifest(p, with_old=True)
            old = await _old_verifier(p)
            req, _, _ = await build_request(p.nc, p.platform(H_DB))

            # While the manifest allows the old Coordinator policy, its verifier's verdicts issue.
            rid = new_request_id()
            signed = sign_verdict(await _verdict(p, req, rid), old.identity.service_key, old.service_cert)
            got = await _deliver(p, evil, signed, rid)
            assert isinstance(got, AttestResult), got
            assert got.outcome == "issued"

            # The update withdraws it: the same, still unexpired certificate now signs nothing.
            await _set_manifest(p, with_old=False)
            rid = new_request_id()
            signed = sign_verdict(await _verdict(p, req, rid), old.identity.service_key, old.service_cert)
            assert await _deliver(p, evil, signed, rid) == "auth.signer_revoked"

            # A verifier of a policy the manifest still allows goes on working through the whole pipeline.
            cred = await p.initializer(H_DB).attest()
            assert cred.bundle.leaf is not None
        finally:
            await evil.close()


async def test_only_a_verifier_policy_signs_verdicts(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    """A service certificate with role verifier counts only if the policy it certifies is bound to the
    verifier role in the current manifest: the CA's or the manifest service's policy signs no verdict."""
    async with pipeline(private_nats.url, snp_emulator) as p:
        evil = await EvilBus.connect(p.url)
        try:
            req, _, _ = await build_request(p.nc, p.platform(H_DB))
            root_key = p.state.engine.root_ca_key()
            for policy in (H_CA, H_COORD):
                key = ec.generate_private_key(ec.SECP256R1())
                cert = issue_service_cert(
                    root_key,
                    root_certificate(root_key),
                    key.public_key(),
                    role=ServiceRole.VERIFIER,
                    replica_id="misbound",
                    policy_hash=policy,
                    now=dt.datetime.now(dt.UTC),
                )
                rid = new_request_id()
                signed = sign_verdict(await _verdict(p, req, rid), key, cert)
                assert await _deliver(p, evil, signed, rid) == "auth.signer_revoked"
        finally:
            await evil.close()


async def test_forged_results_entry_does_not_stop_a_genuine_issuance(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator) as p:
        evil = await EvilBus.connect(p.url)
        try:
            v = await FixtureKeySource(p.state, None, "v").join(
                p.nc, p.platform(H_VERIFIER), ServiceRole.VERIFIER, EvidenceVerifier()
            )
            platform = p.platform(H_DB)
            req, tls, hpke = await build_request(p.nc, platform)
            now = dt.datetime.now(dt.UTC)
            claims = EvidenceVerifier().authenticate(
                req.evidence, emulator_root=platform.emulator_root, now=now
            )
            own = OwnIdentity.from_claims(claims, emulator_root=platform.emulator_root)

            async def genuine(rid: str) -> AttestResult:
                signed = sign_verdict(await _verdict(p, req, rid), v.identity.service_key, v.service_cert)
                got = await _deliver(p, evil, signed, rid)
                assert isinstance(got, AttestResult), got
                return got

            # A genuine answer to another request: its statement is real CA evidence the attacker can copy.
            donor = await genuine(new_request_id())
            attacker = ec.generate_private_key(ec.SECP256R1())
            results = NatsKeyValue(await evil.nc.jetstream().key_value(subjects.RESULTS.bucket))

            def resigned(rid: str) -> bytes:
                # The CA's real statement, the attacker's payload and signature: the key does not match.
                payload = encode_deterministic(
                    IssuedResult(request_id=rid, request_digest=bytes(32), generation=1, sealed=b"junk")
                )
                sig = attacker.sign(
                    transcript(PURPOSE_ISSUED, rid.encode(), payload), ec.ECDSA(hashes.SHA256())
                )
                env = SignedEnvelope(
                    purpose=PURPOSE_ISSUED, payload=payload, signature=sig, statement=donor.envelope.statement
                )
                return encode(AttestResult(request_id=rid, outcome="issued", envelope=env))

            def replayed(rid: str) -> bytes:
                # A genuinely signed answer, bound to another request id, stored under this one.
                return encode(msgspec.structs.replace(donor, request_id=rid))

            for forge in (resigned, replayed):
                rid = new_request_id()
                forged = forge(rid)
                await results.create(rid, forged)
                got = await genuine(rid)
                assert encode(got) != forged
                stored = await results.get(rid)
                assert stored is not None
                assert stored.value == encode(got)  # the forgery was overwritten with compare-and-set
                exp = Expectation(
                    request_id=rid,
                    request_digest=bytes(32),
                    tls_public_key=tls.public_key(),
                    hpke_key=hpke,
                    own=own,
                    pins=INITIALIZER_PINS,
                )
                opened = open_result(got, exp, EvidenceVerifier(), dt.datetime.now(dt.UTC))
                assert opened.leaf.public_key() == tls.public_key()

        finally:
            await evil.close()
