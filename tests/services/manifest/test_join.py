"""Coordinator join against a real manifest replica: what each role gets, and every refusal."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives import serialization

from contrast import subjects
from contrast.attestation.nonce import JOIN, NonceAuthority, consume
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.errors import ContrastError, PolicyError
from contrast.evidence.verifier import EvidenceVerifier
from contrast.pki.service import ServiceRole, service_role
from contrast.replica.join import join, join_nonces, join_once
from contrast.runtime import request
from contrast.testing.kv import MemoryKeyValue
from contrast.wire.v1 import (
    AttestedReply,
    JoinNonceReply,
    JoinNonceRequest,
    JoinReply,
    JoinRequest,
    SetManifestRequest,
)
from tests.services.manifest.mfs_helpers import (
    H_CA,
    H_DB,
    H_VERIFIER,
    POLICIES,
    REPLICA_PINS,
    encode,
    manifest_obj,
    platform_factory,
    replica,
)

NOW = dt.datetime.now(dt.UTC)


async def _set_first(nc: nats.aio.client.Client, emulator_dir: Path) -> AttestedReply:
    req = SetManifestRequest(
        nonce=secrets.token_bytes(32),
        manifest=encode(manifest_obj(emulator_dir)),
        policies=list(POLICIES.values()),
    )
    return await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=20)


async def test_roles_get_exactly_their_keys(private_nats, emulator_dir: Path) -> None:
    async with replica(private_nats.url, emulator_dir, "m1"):
        nc = await nats.connect(private_nats.url)
        try:
            reply = await _set_first(nc, emulator_dir)
            verifier = EvidenceVerifier()
            ca = await join(
                nc,
                await platform_factory(emulator_dir, H_CA)(),
                ServiceRole.CA,
                replica="ca-1",
                verifier=verifier,
                pins=REPLICA_PINS,
                timeout=20,
            )
            assert ca.root_cert.public_bytes(serialization.Encoding.DER) == reply.root_ca
            assert ca.mesh_ca.public_bytes(serialization.Encoding.DER) == reply.mesh_ca
            assert ca.generation == 1
            assert ca.transition_hash == reply.transition_hash
            assert service_role(ca.service_cert) is ServiceRole.CA
            assert ca.keys.root_key_object().public_key() == ca.root_cert.public_key()
            assert ca.keys.mesh_authority().mesh_ca.public_key() == ca.mesh_ca.public_key()
            assert not ca.keys.seed
            assert not ca.keys.nonce_mac_key
            ver = await join(
                nc,
                await platform_factory(emulator_dir, H_VERIFIER)(),
                ServiceRole.VERIFIER,
                replica="verifier-1",
                verifier=verifier,
                pins=REPLICA_PINS,
            )
            assert ver.keys.nonce_mac_key
            assert not ver.keys.root_key
            assert not ver.keys.seed
            assert not ver.keys.mesh_key
            assert not ver.keys.pod_state_secret
            assert service_role(ver.service_cert) is ServiceRole.VERIFIER
            assert ver.history_public_key.public_bytes_raw() == ca.history_public_key.public_bytes_raw()
        finally:
            await nc.close()


async def test_a_verifier_asking_for_ca_or_manifest_is_refused(private_nats, emulator_dir: Path) -> None:
    """Finding 1, through the service: the role comes from the manifest entry of the attested policy."""
    async with replica(private_nats.url, emulator_dir, "m1"):
        nc = await nats.connect(private_nats.url)
        try:
            await _set_first(nc, emulator_dir)
            verifier = EvidenceVerifier()
            rogue = await platform_factory(emulator_dir, H_VERIFIER)()
            for asked in (ServiceRole.CA, ServiceRole.MANIFEST):
                with pytest.raises(ContrastError) as e:
                    await join_once(
                        nc, rogue, asked, replica="v", verifier=verifier, pins=REPLICA_PINS, now=NOW
                    )
                assert e.value.code == "policy.wrong_coordinator_role"
            ok = await join_once(
                nc, rogue, ServiceRole.VERIFIER, replica="v", verifier=verifier, pins=REPLICA_PINS, now=NOW
            )
            assert not ok.keys.seed
            assert not ok.keys.root_key
        finally:
            await nc.close()


async def test_refusals(private_nats, emulator_dir: Path) -> None:
    async with replica(private_nats.url, emulator_dir, "m1"):
        nc = await nats.connect(private_nats.url)
        try:
            verifier = EvidenceVerifier()
            platform = await platform_factory(emulator_dir, H_CA)()
            # No manifest yet: no replica can hand out a nonce.
            with pytest.raises(ContrastError) as e:
                await request(nc, subjects.COORDINATOR_JOIN_NONCE, JoinNonceRequest(), JoinNonceReply)
            assert e.value.code == "state.uninitialized"
            await _set_first(nc, emulator_dir)

            # A workload policy (not Role coordinator) is refused, whatever role it asks for.
            workload = await platform_factory(emulator_dir, H_DB)()
            with pytest.raises(ContrastError) as e:
                await join_once(
                    nc,
                    workload,
                    ServiceRole.VERIFIER,
                    replica="x",
                    verifier=verifier,
                    pins=REPLICA_PINS,
                    now=NOW,
                )
            assert e.value.code == "policy.not_coordinator"

            # A replayed join request (same statement, same nonce) is refused: single use.
            nonce = (
                await request(nc, subjects.COORDINATOR_JOIN_NONCE, JoinNonceRequest(), JoinNonceReply)
            ).nonce
            ident = await CoordinatorIdentity.create(platform, verifier, NOW, nonce=nonce)
            req = JoinRequest(
                role="ca", replica="ca-1", statement=ident.statement, client_nonce=secrets.token_bytes(32)
            )
            await request(nc, subjects.COORDINATOR_JOIN, req, JoinReply)
            with pytest.raises(ContrastError) as e:
                await request(nc, subjects.COORDINATOR_JOIN, req, JoinReply)
            assert e.value.code == "policy.nonce_reused"

            # A statement made with a nonce we did not issue.
            ident = await CoordinatorIdentity.create(platform, verifier, NOW, nonce=secrets.token_bytes(32))
            bad = JoinRequest(
                role="ca", replica="ca-1", statement=ident.statement, client_nonce=secrets.token_bytes(32)
            )
            with pytest.raises(ContrastError) as e:
                await request(nc, subjects.COORDINATOR_JOIN, bad, JoinReply)
            assert e.value.code == "policy.nonce_unknown"

            # An unknown role.
            nonce = (
                await request(nc, subjects.COORDINATOR_JOIN_NONCE, JoinNonceRequest(), JoinNonceReply)
            ).nonce
            ident = await CoordinatorIdentity.create(platform, verifier, NOW, nonce=nonce)
            bad = JoinRequest(
                role="root", replica="r", statement=ident.statement, client_nonce=secrets.token_bytes(32)
            )
            with pytest.raises(ContrastError) as e:
                await request(nc, subjects.COORDINATOR_JOIN, bad, JoinReply)
            assert e.value.code == "request.bad_role"
        finally:
            await nc.close()


async def test_reply_for_another_client_nonce_is_refused(private_nats, emulator_dir: Path) -> None:
    """A join reply captured on the bus cannot be handed to another joiner (or reused by the same one)."""
    from contrast.replica.join import check_grant

    async with replica(private_nats.url, emulator_dir, "m1"):
        nc = await nats.connect(private_nats.url)
        try:
            await _set_first(nc, emulator_dir)
            verifier = EvidenceVerifier()
            platform = await platform_factory(emulator_dir, H_CA)()
            nonce = (
                await request(nc, subjects.COORDINATOR_JOIN_NONCE, JoinNonceRequest(), JoinNonceReply)
            ).nonce
            ident = await CoordinatorIdentity.create(platform, verifier, NOW, nonce=nonce)
            client_nonce = secrets.token_bytes(32)
            req = JoinRequest(role="ca", replica="ca-1", statement=ident.statement, client_nonce=client_nonce)
            reply = await request(nc, subjects.COORDINATOR_JOIN, req, JoinReply)
            ok = check_grant(
                reply,
                identity=ident,
                role=ServiceRole.CA,
                client_nonce=client_nonce,
                verifier=verifier,
                pins=REPLICA_PINS,
                now=NOW,
            )
            assert ok.generation == 1
            with pytest.raises(ContrastError) as e:
                check_grant(
                    reply,
                    identity=ident,
                    role=ServiceRole.CA,
                    client_nonce=secrets.token_bytes(32),
                    verifier=verifier,
                    pins=REPLICA_PINS,
                    now=NOW,
                )
            assert e.value.code == "auth.bad_signature"
            with pytest.raises(
                ContrastError
            ) as e:  # the grant is for a CA; it cannot be opened as a verifier
                check_grant(
                    reply,
                    identity=ident,
                    role=ServiceRole.VERIFIER,
                    client_nonce=client_nonce,
                    verifier=verifier,
                    pins=REPLICA_PINS,
                    now=NOW,
                )
            assert e.value.code == "auth.bad_join_reply"
            other = await CoordinatorIdentity.create(platform, verifier, NOW, nonce=nonce)
            with pytest.raises(ContrastError) as e:  # another replica's keys cannot open it
                check_grant(
                    reply,
                    identity=other,
                    role=ServiceRole.CA,
                    client_nonce=client_nonce,
                    verifier=verifier,
                    pins=REPLICA_PINS,
                    now=NOW,
                )
            assert e.value.code.startswith("auth.")
        finally:
            await nc.close()


async def test_join_nonce_tokens() -> None:
    marks = MemoryKeyValue()
    now_ms = 1_000_000_000
    nonces = NonceAuthority(b"k" * 32, kind=JOIN, lifetime_ms=10_000)
    n = nonces.issue(now_ms)
    token = nonces.check(n, now_ms)
    await consume(marks, token)
    with pytest.raises(PolicyError) as e:
        await consume(marks, token)
    assert e.value.code == "policy.nonce_reused"
    with pytest.raises(PolicyError) as e:
        NonceAuthority(b"x" * 32, kind=JOIN).check(nonces.issue(now_ms), now_ms)
    assert e.value.code == "policy.nonce_unknown"
    with pytest.raises(PolicyError) as e:  # an attestation nonce under the same key is no join nonce
        nonces.check(NonceAuthority(b"k" * 32).issue(now_ms), now_ms)
    assert e.value.code == "policy.nonce_unknown"
    tampered = bytearray(nonces.issue(now_ms))
    tampered[0] ^= 1  # a later expiry without the key
    with pytest.raises(PolicyError) as e:
        nonces.check(bytes(tampered), now_ms)
    assert e.value.code == "policy.nonce_unknown"
    old = nonces.issue(now_ms)
    with pytest.raises(PolicyError) as e:
        nonces.check(old, now_ms + 13_000)
    assert e.value.code == "policy.nonce_expired"
    with pytest.raises(PolicyError):
        nonces.check(b"short", now_ms)


def test_a_verifier_cannot_mint_join_nonces() -> None:
    # Verifiers hold the attestation nonce-MAC key; the join-nonce key must not be derivable from it.
    from contrast.crypto.kdf import SeedEngine, generate_seed, hkdf_sha256

    engine = SeedEngine(*generate_seed())
    key = engine.join_nonce_key()
    assert key != engine.nonce_mac_key()
    assert key != hkdf_sha256(engine.nonce_mac_key(), None, b"contrast join nonce key v1", 32)
    assert key == SeedEngine(engine.seed, engine.salt).join_nonce_key()
    verifier_nonce = NonceAuthority(engine.nonce_mac_key()).issue(1_000_000_000)
    with pytest.raises(PolicyError) as e:
        join_nonces(engine).check(verifier_nonce, 1_000_000_000)
    assert e.value.code == "policy.nonce_unknown"
