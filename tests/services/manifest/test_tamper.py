"""A tampered store makes the replica refuse to serve, naming the problem (DESIGN §3.6)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from nats.js.kv import KeyValue

from contrast import subjects
from contrast.coordinator.history import LATEST_KEY, LatestPointer, manifest_key, transition_key
from contrast.coordinator.manifest_format import parse_manifest
from contrast.crypto.ownerkeys import sign_transition
from contrast.errors import ContrastError
from contrast.runtime import request
from contrast.wire.v1 import (
    AttestedReply,
    GetManifestRequest,
    JoinNonceReply,
    JoinNonceRequest,
    ReadinessReply,
    ReadinessRequest,
    SetManifestRequest,
)
from tests.services.manifest.mfs_helpers import POLICIES, encode, manifest_obj, owner_key, replica


async def _edit_manifest(kv: KeyValue, st: dict[str, bytes]) -> None:
    await kv.put(manifest_key(st["m2"]), st["raw2"].replace(b"db.internal", b"db.evil.xx"))


async def _swap_latest(kv: KeyValue, st: dict[str, bytes]) -> None:
    forged = LatestPointer.sign(ed25519.Ed25519PrivateKey.generate(), st["t1"], 2, st["rev"][0])
    await kv.put(LATEST_KEY, forged.encode())


async def _roll_back(kv: KeyValue, st: dict[str, bytes]) -> None:
    await kv.put(LATEST_KEY, st["latest1"])


async def _delete_transition(kv: KeyValue, st: dict[str, bytes]) -> None:
    await kv.delete(transition_key(st["t1"]))  # the first one: only a full walk of the chain finds it


async def _delete_head_transition(kv: KeyValue, st: dict[str, bytes]) -> None:
    await kv.purge(transition_key(st["t2"]))


CASES: list[tuple[str, Callable[[KeyValue, dict[str, bytes]], Awaitable[None]], str]] = [
    ("edited-manifest", _edit_manifest, "store.manifest_hash_mismatch"),
    ("swapped-latest", _swap_latest, "store.bad_latest_signature"),
    ("rolled-back-latest", _roll_back, "store.rollback"),
    ("deleted-transition", _delete_transition, "store.missing_transition"),
    ("deleted-head-transition", _delete_head_transition, "store.missing_transition"),
]


@pytest.mark.parametrize(("name", "tamper", "code"), CASES, ids=[c[0] for c in CASES])
async def test_tamper_is_detected_and_named(
    private_nats, emulator_dir: Path, name: str, tamper: Callable[..., Awaitable[None]], code: str
) -> None:
    async with replica(private_nats.url, emulator_dir, "m1"):
        nc = await nats.connect(private_nats.url)
        try:
            kv = await nc.jetstream().key_value(subjects.HISTORY.bucket)
            raw1 = encode(manifest_obj(emulator_dir))
            r1 = await request(
                nc,
                subjects.USER_MANIFEST_SET,
                SetManifestRequest(
                    nonce=secrets.token_bytes(32), manifest=raw1, policies=list(POLICIES.values())
                ),
                AttestedReply,
                timeout=20,
            )
            latest1 = (await kv.get(LATEST_KEY)).value
            rev1 = (await kv.get(LATEST_KEY)).revision
            raw2 = encode(manifest_obj(emulator_dir, db_sans=["db", "db.internal"]))
            doc2 = parse_manifest(raw2)
            sig = sign_transition(owner_key(), doc2.hash, r1.transition_hash)
            r2 = await request(
                nc,
                subjects.USER_MANIFEST_SET,
                SetManifestRequest(
                    nonce=secrets.token_bytes(32),
                    manifest=raw2,
                    policies=list(POLICIES.values()),
                    signature=sig,
                ),
                AttestedReply,
                timeout=20,
            )
            # Untampered: serves.
            await request(
                nc,
                subjects.USER_MANIFEST_GET,
                GetManifestRequest(nonce=secrets.token_bytes(32)),
                AttestedReply,
            )
            state = {
                "t1": r1.transition_hash,
                "t2": r2.transition_hash,
                "m2": doc2.hash,
                "raw2": raw2,
                "latest1": latest1,
                "rev": [rev1],
            }
            await tamper(kv, state)  # type: ignore[arg-type]
            with pytest.raises(ContrastError) as e:
                await request(
                    nc,
                    subjects.USER_MANIFEST_GET,
                    GetManifestRequest(nonce=secrets.token_bytes(32)),
                    AttestedReply,
                )
            assert e.value.code == code
            # A record in the middle of the chain is checked by every full walk (get, recovery, peer join);
            # everything else is checked on every request, so nothing that needs keys is served either.
            if name != "deleted-transition":
                with pytest.raises(ContrastError) as e:
                    await request(nc, subjects.COORDINATOR_JOIN_NONCE, JoinNonceRequest(), JoinNonceReply)
                assert e.value.code == code
                ready = await request(nc, subjects.health("manifest"), ReadinessRequest(), ReadinessReply)
                assert not ready.ready
                detail = next(c.detail for c in ready.checks if c.name == "manifest_state")
                assert detail.startswith(code)
        finally:
            await nc.close()
