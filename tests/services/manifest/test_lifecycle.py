"""The manifest lifecycle over real NATS: TOFU set, signed updates, CA rotation, and every refusal."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.aio.msg import Msg

from contrast import subjects
from contrast.coordinator.manifest_format import parse_manifest
from contrast.coordinator.user_protocol import verify_attested_reply
from contrast.crypto.kdf import SeedEngine
from contrast.crypto.ownerkeys import sign_transition
from contrast.crypto.seedshare import decode_seed_shares, decrypt_share
from contrast.errors import AuthError, ContrastError
from contrast.evidence.verifier import EvidenceVerifier
from contrast.pki.chain import verify_leaf
from contrast.pki.root import root_certificate
from contrast.pki.service import ServiceRole
from contrast.replica.join import join
from contrast.runtime import request
from contrast.wire.v1 import (
    AttestedReply,
    GetManifestRequest,
    HistoryExport,
    ManifestUpdated,
    SetManifestRequest,
    SetManifestResult,
    decoder,
)
from tests.services.manifest.mfs_helpers import (
    H_CA,
    H_COORD,
    POLICIES,
    POLICY_COORD,
    REPLICA_PINS,
    encode,
    manifest_obj,
    other_owner_key,
    owner_key,
    platform_factory,
    replica,
    share_key,
)

NOW = dt.datetime.now(dt.UTC)


def _set(
    raw: bytes, *, signature: bytes = b"", expected_previous: bytes = b"", policies=None
) -> SetManifestRequest:
    return SetManifestRequest(
        nonce=secrets.token_bytes(32),
        manifest=raw,
        policies=list((policies or POLICIES).values()),
        signature=signature,
        expected_previous=expected_previous,
    )


async def _code(nc, req: SetManifestRequest) -> str:
    with pytest.raises(ContrastError) as e:
        await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=20)
    return e.value.code


async def test_lifecycle_and_refusals(private_nats, emulator_dir: Path) -> None:
    verifier = EvidenceVerifier()
    async with replica(private_nats.url, emulator_dir, "m1") as running:
        nc = await nats.connect(private_nats.url)
        updates: list[ManifestUpdated] = []

        async def on_update(msg: Msg) -> None:
            updates.append(decoder(ManifestUpdated).decode(msg.data))

        await nc.subscribe(subjects.EVENT_MANIFEST_UPDATED, cb=on_update)
        try:
            # --- invalid input is refused before anything is stored
            bad = manifest_obj(emulator_dir)
            bad["ReferenceValues"]["snp"][0]["MinimumTCB"].pop("BootloaderVersion")
            assert await _code(nc, _set(encode(bad))) == "request.invalid_manifest"
            m1 = encode(manifest_obj(emulator_dir))
            assert await _code(nc, _set(m1, policies={H_COORD: POLICY_COORD})) == "request.policy_missing"

            # --- first set: trust on first use, seed shares returned once
            req = _set(m1)
            r1 = await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=20)
            doc1 = parse_manifest(m1)
            verify_attested_reply(r1, req.nonce, doc1.manifest, verifier=verifier, now=NOW)
            res1 = decoder(SetManifestResult).decode(r1.payload)
            assert res1.generation == 1
            assert res1.manifest_hash == doc1.hash
            seed, salt = decrypt_share(share_key(), decode_seed_shares(res1.seed_shares))
            root_der = root_certificate(SeedEngine(seed, salt).root_ca_key()).public_bytes(
                serialization.Encoding.DER
            )
            assert root_der == r1.root_ca
            # The attested reply is bound to our nonce: it does not verify for another one.
            with pytest.raises(ContrastError) as e:
                verify_attested_reply(r1, secrets.token_bytes(32), doc1.manifest, verifier=verifier, now=NOW)
            assert e.value.code == "policy.report_data_mismatch"

            # A workload certified under generation 1, by a CA replica that joined at generation 1.
            platform = await platform_factory(emulator_dir, H_CA)()
            ca1 = await join(
                nc, platform, ServiceRole.CA, replica="ca-1", verifier=verifier, pins=REPLICA_PINS, timeout=20
            )
            leaf = ca1.keys.mesh_authority().issue_leaf(
                ec.generate_private_key(ec.SECP256R1()).public_key(),
                sans=["db"],
                policy_hash=bytes(32),
                tee="snp",
                now=NOW,
            )

            # --- a second "first set" is an update without a signature
            obj2 = manifest_obj(emulator_dir, db_sans=["db", "db.internal"])
            m2 = encode(obj2)
            doc2 = parse_manifest(m2)
            assert await _code(nc, _set(m2)) == "auth.signature_required"
            # another key
            sig_other = sign_transition(other_owner_key(), doc2.hash, r1.transition_hash)
            assert await _code(nc, _set(m2, signature=sig_other)) == "auth.not_authorized"
            # changed seed-share owners, even when correctly signed
            obj_shares = manifest_obj(emulator_dir, shares=[])
            doc_s = parse_manifest(encode(obj_shares))
            sig_s = sign_transition(owner_key(), doc_s.hash, r1.transition_hash)
            assert (
                await _code(nc, _set(encode(obj_shares), signature=sig_s))
                == "request.seedshare_owners_changed"
            )

            # --- the signed update
            sig2 = sign_transition(owner_key(), doc2.hash, r1.transition_hash)
            req2 = _set(m2, signature=sig2, expected_previous=r1.transition_hash)
            r2 = await request(nc, subjects.USER_MANIFEST_SET, req2, AttestedReply, timeout=20)
            verify_attested_reply(r2, req2.nonce, doc2.manifest, verifier=verifier, now=NOW)
            res2 = decoder(SetManifestResult).decode(r2.payload)
            assert res2.generation == 2
            assert not res2.seed_shares
            assert r2.root_ca == r1.root_ca, "the root CA never changes"
            assert r2.mesh_ca != r1.mesh_ca, "the mesh CA rotates with every manifest"

            # The workload certified under generation 1 chains to the root, but not to the new mesh CA.
            root = x509.load_der_x509_certificate(r2.root_ca)
            verify_leaf(leaf, anchor=root, intermediates=[ca1.intermediate], now=NOW)
            verify_leaf(leaf, anchor=ca1.mesh_ca, now=NOW)
            with pytest.raises(AuthError) as ae:
                verify_leaf(leaf, anchor=x509.load_der_x509_certificate(r2.mesh_ca), now=NOW)
            assert ae.value.code == "auth.bad_certificate"

            # --- a replayed set (the old, correctly signed request) is refused
            assert await _code(nc, _set(m2, signature=sig2)) == "auth.not_authorized"
            # --- --atomic against a stale transition: the history moved on
            obj3 = manifest_obj(emulator_dir, db_sans=["db", "db.example"])
            doc3 = parse_manifest(encode(obj3))
            sig3 = sign_transition(owner_key(), doc3.hash, r1.transition_hash)
            code = await _code(nc, _set(encode(obj3), signature=sig3, expected_previous=r1.transition_hash))
            assert code == "state.stale"

            # --- get: two manifests, the history as stored
            g = await request(
                nc,
                subjects.USER_MANIFEST_GET,
                GetManifestRequest(nonce=secrets.token_bytes(32)),
                AttestedReply,
            )
            export = decoder(HistoryExport).decode(g.payload)
            assert export.generation == 2
            assert export.manifests == [m1, m2]
            # The generation is a metric, and every commit was announced.
            registry = running.runtime.metrics.registry
            assert registry.get_sample_value("contrast_manifest_generation") == 2
            await nc.flush()
            assert [(u.generation, u.manifest_hash) for u in updates] == [(1, doc1.hash), (2, doc2.hash)]
        finally:
            await nc.close()
