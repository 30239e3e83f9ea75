"""Every security check fails closed, against a real nats-server and an attacker who owns the bus."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.msg import Msg
from nats.js.errors import BadRequestError

from contrast import subjects
from contrast.attestation.bundle import issue
from contrast.attestation.verdict import sign_verdict
from contrast.ca.service import HEAD_MAX_AGE
from contrast.coordinator.manifest_format import PolicyEntry
from contrast.coordinator.statement import CoordinatorIdentity, spki
from contrast.crypto.kdf import SeedEngine, generate_seed
from contrast.errors import ContrastError
from contrast.evidence.snp import abi
from contrast.evidence.snp.emulator import DEFAULT_POLICY, EmulatedSnpPlatform
from contrast.evidence.verifier import Evidence, EvidenceVerifier
from contrast.pki.root import root_certificate
from contrast.pki.service import ServiceRole, issue_service_cert
from contrast.platform.emulated import EmulatedSnp
from contrast.runtime.natsserver import NatsServer
from contrast.testing.fixture import FixtureKeySource
from contrast.wire.v1 import (
    AttestationEvent,
    AttestRequest,
    DeadLetter,
    SignedVerdict,
    Verdict,
    decoder,
    encode,
)
from tests.services.evil_bus import EvilBus, build_request, eventually, new_request_id, rejection_code
from tests.services.pipeline import (
    H_CA,
    H_DB,
    H_UNKNOWN,
    H_VERIFIER,
    Pipeline,
    history_kv,
    manifest_doc,
    pipeline,
    set_manifest,
    wait_ready,
)


@pytest.fixture(scope="module")
def foreign_emulator() -> EmulatedSnpPlatform:
    """An emulator with its own root, which the manifest does not name."""
    return EmulatedSnpPlatform.create()


class DebugSnp(EmulatedSnp):
    """An emulated guest launched with the DEBUG policy bit set."""

    def __init__(self, emulator: EmulatedSnpPlatform, host_data: bytes) -> None:
        super().__init__(emulator, host_data=host_data)
        self._emu, self._hd = emulator, host_data

    async def evidence(self, report_data: bytes) -> Evidence:
        report = self._emu.report(
            report_data=report_data, host_data=self._hd, policy=DEFAULT_POLICY | abi.POLICY_DEBUG
        )
        return Evidence(tee="snp", report=report, certs=list(self._emu.cert_chain("Milan")))


async def test_replayed_request_is_rejected_as_nonce_reuse(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator) as p:
        evil = await EvilBus.connect(p.url)
        try:
            await p.initializer(H_DB).attest()
            captured = decoder(AttestRequest).decode(
                evil.on(subjects.attest_requested(subjects.DEFAULT_SOURCE))[0].data
            )
            replay = msgspec.structs.replace(captured, request_id=new_request_id())
            waiter = await evil.result_waiter(replay.request_id)
            await evil.publish_request(replay)
            assert rejection_code(await waiter) == "policy.nonce_reused"

            # Both outcomes are audit events (public facts only); the rejection's event follows its answer.
            def stages() -> set[tuple[str, str, str]]:
                events = (
                    decoder(AttestationEvent).decode(c.data) for c in evil.on(subjects.EVENT_ATTESTATION)
                )
                return {(e.request_id, e.stage, e.reason) for e in events}

            await eventually(lambda: (replay.request_id, "rejected", "policy.nonce_reused") in stages())
            assert (captured.request_id, "verified", "") in stages()
            assert (captured.request_id, "issued", "") in stages()
            # And no certificate for it ever appears: the verifier decided before it published the rejection's
            # event, and its messages reach us in the order it sent them, so a verdict would have come first.
            assert not [
                c
                for c in evil.on(subjects.ATTEST_VERIFIED)
                if c.headers.get("Nats-Msg-Id") == replay.request_id
            ]
        finally:
            await evil.close()


async def test_expired_nonce_is_rejected(private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform) -> None:
    async with pipeline(private_nats.url, snp_emulator, verifiers=0) as p:
        later = [0.0]  # seconds the verifier's clock runs ahead once the nonce is issued
        await p.start(
            "verifier", "verifier-short", nonce_lifetime_ms=200, clock=lambda: time.time() + later[0]
        )
        await wait_ready(p.nc, "verifier")
        evil = await EvilBus.connect(p.url)
        try:
            req, _, _ = await build_request(p.nc, p.platform(H_DB))
            later[0] = 0.4  # past the 200 ms lifetime when the request is checked
            waiter = await evil.result_waiter(req.request_id)
            await evil.publish_request(req)
            assert rejection_code(await waiter) == "policy.nonce_expired"
        finally:
            await evil.close()


@pytest.mark.parametrize("case", ["unknown_host_data", "untrusted_root", "debug_guest", "other_keys_bound"])
async def test_bad_evidence_is_rejected_with_a_reason(
    private_nats: NatsServer,
    snp_emulator: EmulatedSnpPlatform,
    foreign_emulator: EmulatedSnpPlatform,
    case: str,
) -> None:
    expected = {
        "unknown_host_data": "policy.policy_unknown",
        # Nothing in the evidence authenticates, so no policy is evaluated: an evidence.* rejection.
        "untrusted_root": "evidence.untrusted_root",
        "debug_guest": "policy.debug_enabled",
        "other_keys_bound": "policy.report_data_mismatch",
    }[case]
    async with pipeline(private_nats.url, snp_emulator) as p:
        if case in ("other_keys_bound", "untrusted_root"):
            # Built by hand: an initializer from a foreign root would not even believe our Coordinator.
            other = ec.generate_private_key(ec.SECP256R1()).public_key()
            if case == "other_keys_bound":
                req, _, _ = await build_request(p.nc, p.platform(H_DB), bind_tls=spki(other))
            else:
                req, _, _ = await build_request(p.nc, EmulatedSnp(foreign_emulator, host_data=H_DB))
            evil = await EvilBus.connect(p.url)
            try:
                waiter = await evil.result_waiter(req.request_id)
                await evil.publish_request(req)
                code = rejection_code(await waiter)
            finally:
                await evil.close()
        else:
            platform = {
                "unknown_host_data": p.platform(H_UNKNOWN),
                "debug_guest": DebugSnp(snp_emulator, H_DB),
            }[case]
            init = p.initializer(H_DB)
            init.platform = platform
            with pytest.raises(ContrastError) as e:
                await init.attempt()
            code = e.value.code
        assert code.startswith(expected), code


async def _forge_and_expect_no_certificate(
    p: Pipeline, evil: EvilBus, signed: SignedVerdict | bytes, rid: str
) -> str:
    data = signed if isinstance(signed, bytes) else encode(signed)
    results: list[bytes] = []

    async def on_result(msg: Msg) -> None:
        results.append(msg.data)

    sub = await evil.nc.subscribe(subjects.attest_result(rid), cb=on_result)
    await evil.nc.jetstream().publish(subjects.ATTEST_VERIFIED, data, headers={"Nats-Msg-Id": rid})
    deadline = time.monotonic() + 5
    letters: list[DeadLetter] = []
    while not letters and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        letters = [d for d in await evil.dead_letters() if d.msg_id == rid]
    # An answer, had there been one, was published by the CA before its dead letter: it would be here by now.
    await sub.unsubscribe()
    assert not results, "a forged verdict got an answer"
    assert letters, "the forged verdict was neither issued nor dead-lettered"
    return letters[0].code


async def test_forged_verdicts_get_no_certificate(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator) as p:
        evil = await EvilBus.connect(p.url)
        try:
            now_ms = int(time.time() * 1000)
            req, _, _ = await build_request(p.nc, p.platform(H_DB))
            manifest_head = await p.state.history(await history_kv(p.nc)).read_latest()
            assert manifest_head is not None

            def verdict(
                rid: str,
                generation: int = manifest_head.generation,
                th: bytes = manifest_head.transition_hash,
            ) -> Verdict:
                return Verdict(
                    request_id=rid,
                    request_digest=b"\x00" * 32,
                    accepted=True,
                    tee="snp",
                    policy_hash=H_DB,
                    tls_public_key=req.tls_public_key,
                    hpke_public_key=req.hpke_public_key,
                    generation=generation,
                    transition_hash=th,
                    issued_at_ms=now_ms,
                    verifier="evil",
                )

            # (1) unsigned: garbage where the signature belongs, with a genuine certificate-shaped blob
            legit = await FixtureKeySource(p.state, None, "v").join(
                p.nc, p.platform(H_VERIFIER), ServiceRole.VERIFIER, EvidenceVerifier()
            )
            rid = new_request_id()
            good = sign_verdict(verdict(rid), legit.identity.service_key, legit.service_cert)
            unsigned = msgspec.structs.replace(good, signature=b"\x30\x06\x02\x01\x01\x02\x01\x01")
            assert (await _forge_and_expect_no_certificate(p, evil, unsigned, rid)) == "auth.bad_signature"
            # (2) signed by a key whose certificate says another role (issued by the real root)
            rid = new_request_id()
            attacker = ec.generate_private_key(ec.SECP256R1())
            root_key = p.state.engine.root_ca_key()
            ca_cert = issue_service_cert(
                root_key,
                root_certificate(root_key),
                attacker.public_key(),
                role=ServiceRole.CA,
                replica_id="evil",
                policy_hash=H_CA,
                now=dt.datetime.now(dt.UTC),
            )
            assert (
                await _forge_and_expect_no_certificate(
                    p, evil, sign_verdict(verdict(rid), attacker, ca_cert), rid
                )
            ) == "auth.wrong_role"
            # (3) signed by a "verifier" certificate from another root with the same name
            rid = new_request_id()
            other = SeedEngine(*generate_seed()).root_ca_key()
            fake = issue_service_cert(
                other,
                root_certificate(other),
                attacker.public_key(),
                role=ServiceRole.VERIFIER,
                replica_id="evil",
                policy_hash=H_VERIFIER,
                now=dt.datetime.now(dt.UTC),
            )
            assert (
                await _forge_and_expect_no_certificate(
                    p, evil, sign_verdict(verdict(rid), attacker, fake), rid
                )
            ) == "auth.bad_service_cert"
            # (4) garbage bytes
            rid = new_request_id()
            assert (await _forge_and_expect_no_certificate(p, evil, b"\x93garbage", rid)) == "request.decode"
            # (5) a genuine verifier's signature on a verdict for an old generation
            raw, policies = manifest_doc(p.emulator, web_sans=["web2.default.svc"])
            await set_manifest(p.nc, p.state, raw, policies)
            # No update event: the CA must notice the new generation from the authenticated history alone.
            await asyncio.sleep(HEAD_MAX_AGE + 0.2)
            rid = new_request_id()
            stale = sign_verdict(verdict(rid), legit.identity.service_key, legit.service_cert)
            code = await _forge_and_expect_no_certificate(p, evil, stale, rid)
            assert code in ("auth.stale_generation",), code
        finally:
            await evil.close()


async def test_bus_capture_holds_no_secret(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator, verifiers=2) as p:
        evil = await EvilBus.connect(p.url)
        creds = [await p.initializer(H_DB).attest() for _ in range(3)]

        def issued() -> int:
            events = (decoder(AttestationEvent).decode(c.data) for c in evil.on(subjects.EVENT_ATTESTATION))
            return sum(e.stage == "issued" for e in events)

        await eventually(lambda: issued() >= 3)  # the CA's last messages of each attestation are captured
        captured = evil.all_bytes()
        await evil.close()
        ca = next(r for name, r in p.running.items() if name.startswith("ca"))
        assert ca is not None
        engine = p.state.engine
        mesh = next(iter(p.state.meshes.values()))

        def scalar(k: ec.EllipticCurvePrivateKey) -> list[bytes]:
            n = (k.curve.key_size + 7) // 8
            der = k.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            return [k.private_numbers().private_value.to_bytes(n, "big"), der]

        secrets_ = [
            engine.seed,
            engine.salt,
            engine.pod_state_secret(),
            engine.nonce_mac_key(),
            *scalar(engine.root_ca_key()),
            *scalar(mesh.key),
        ]
        for c in creds:
            secrets_ += [
                c.bundle.workload_secret,
                c.bundle.workload_secret.hex().encode(),
                *scalar(c.tls_key),
            ]
        # The bundle *is* on the bus, sealed: its public parts must be there, its secrets must not.
        assert creds[0].bundle.leaf.public_bytes(serialization.Encoding.DER) not in captured  # sealed too
        assert len(captured) > 50_000
        for s in secrets_:
            assert len(s) >= 32
            assert s not in captured


async def test_malformed_client_input_gets_typed_errors(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator) as p:
        evil = await EvilBus.connect(p.url)
        try:
            # (Nonce requests are stored in NONCE_<source>, not answered by a request/reply endpoint: what a
            # malformed or misaddressed one gets, nothing, is in tests/services/verifier/test_nonce_queue.py.)
            # The stream: garbage and wrong types are dead-lettered with a code, never crash the replica.
            for payload in (b"\x00garbage", msgspec.msgpack.encode({"request_id": 5, "nonce": "x"})):
                await evil.nc.jetstream().publish(
                    subjects.attest_requested(subjects.DEFAULT_SOURCE),
                    payload,
                    headers={"Nats-Msg-Id": new_request_id()},
                )
            # Oversized: the stream itself refuses it (bounded by its max_msg_size).
            with pytest.raises(BadRequestError) as big:
                await evil.nc.jetstream().publish(
                    subjects.attest_requested(subjects.DEFAULT_SOURCE),
                    b"\x00" * (subjects.attest_stream(subjects.DEFAULT_SOURCE).max_msg_size + 1),
                    headers={"Nats-Msg-Id": new_request_id()},
                )
            assert big.value.err_code == 10054  # JSStreamMessageExceedsMaximumErr
            # Well-formed but with a TLS key that is not P-256: a signed, typed rejection.
            req, _, _ = await build_request(p.nc, p.platform(H_DB))
            bad = msgspec.structs.replace(req, tls_public_key=b"\x30" + b"\x00" * 90)
            waiter = await evil.result_waiter(bad.request_id)
            await evil.publish_request(bad)
            assert rejection_code(await waiter) == "request.bad_tls_key"
            await eventually(lambda: len(evil.on(subjects.EVENT_DEADLETTER)) >= 2)
            stream = subjects.attest_stream(subjects.DEFAULT_SOURCE).name
            assert {d.code for d in await evil.dead_letters() if d.stream == stream} == {"request.decode"}
            # The replica keeps serving.
            creds = await p.initializer(H_DB).attest()
            assert creds.bundle.leaf is not None
        finally:
            await evil.close()


@pytest.mark.parametrize("forger_policy", [H_DB, H_VERIFIER], ids=["workload", "verifier"])
async def test_forged_answers_are_ignored_by_the_initializer(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform, forger_policy: bytes
) -> None:
    """The bus seals its own bundle to the initializer's public HPKE key: the initializer must not take it,
    even with the Coordinator's own keys, when the statement is a workload's or a *verifier's* (genuine
    Coordinator code, but only a CA policy issues)."""
    async with pipeline(private_nats.url, snp_emulator, cas=0) as p:
        evil = await EvilBus.connect(p.url)
        head = await p.state.history(await history_kv(p.nc)).read_latest()
        assert head is not None
        engine = p.state.engine
        identity = await CoordinatorIdentity.create(
            p.platform(forger_policy), EvidenceVerifier(), dt.datetime.now(dt.UTC)
        )
        mesh = p.state.meshes[head.transition_hash]

        async def forge(msg: Msg) -> None:
            req = decoder(AttestRequest).decode(msg.data)
            v = Verdict(
                request_id=req.request_id,
                request_digest=hashlib.sha256(msg.data).digest(),
                accepted=True,
                tee="snp",
                policy_hash=H_DB,
                tls_public_key=req.tls_public_key,
                hpke_public_key=req.hpke_public_key,
                generation=head.generation,
                transition_hash=head.transition_hash,
                issued_at_ms=0,
                verifier="evil",
            )
            result = issue(
                verdict=v,
                entry=PolicyEntry(SANs=["evil.svc"]),
                mesh=mesh,
                root_cert=root_certificate(engine.root_ca_key()),
                pod_state_secret=engine.pod_state_secret(),
                identity=identity,
                now=dt.datetime.now(dt.UTC),
            )
            await evil.nc.publish(subjects.attest_result(req.request_id), encode(result))

        await evil.nc.subscribe(subjects.ATTEST_REQUESTED_ANY, cb=forge)
        init = p.initializer(H_DB, attempt_timeout=2.5)
        with pytest.raises(ContrastError) as e:
            await init.attempt()
        assert e.value.code == "state.timeout"  # the forgery was refused; no genuine CA was running
        await evil.close()
