"""Owner recovery is refused while a ready peer exists (the stale replica recovers from it), unless forced."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Any

import nats
import pytest

from contrast import subjects
from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.coordinator.user_protocol import recovery_report_data
from contrast.errors import ContrastError
from contrast.evidence.verifier import EvidenceVerifier
from contrast.manifest.peer import PeerRecovery
from contrast.manifest.state import ManifestReplica
from contrast.manifest.userapi import UserApi
from contrast.runtime import request
from contrast.testing.kv import MemoryKeyValue
from contrast.wire.v1 import AttestedReply, GetManifestRequest, RecoveryChallengeRequest, SetManifestRequest
from tests.services.manifest.mfs_helpers import POLICIES, encode, manifest_obj, platform_factory, replica


async def _stale_api(emulator_dir: Path, peer_ready: bool) -> tuple[UserApi, Any]:
    kv = MemoryKeyValue()
    # A history exists that this replica holds no seed for.
    await ManifestReplica(kv).set_manifest(
        encode(manifest_obj(emulator_dir)), list(POLICIES.values()), signature=b"", expected_previous=b""
    )
    state = ManifestReplica(kv)
    platform = await platform_factory(emulator_dir)()
    identity = await CoordinatorIdentity.create(platform, EvidenceVerifier(), dt.datetime.now(dt.UTC))

    async def probe() -> bool:
        return peer_ready

    api = UserApi(state, platform=platform, identity=identity, replica_name="m9", ready_peer_exists=probe)
    return api, platform


async def test_refused_while_a_peer_is_ready_unless_forced(emulator_dir: Path) -> None:
    api, platform = await _stale_api(emulator_dir, peer_ready=True)
    nonce = secrets.token_bytes(32)
    with pytest.raises(ContrastError) as e:
        await api.recover_challenge(RecoveryChallengeRequest(nonce=nonce), None)  # type: ignore[arg-type]
    assert e.value.code == "state.peer_ready"
    challenge = await api.recover_challenge(RecoveryChallengeRequest(nonce=nonce, force=True), None)  # type: ignore[arg-type]
    claims = EvidenceVerifier().authenticate(
        challenge.evidence, emulator_root=platform.emulator_root, now=dt.datetime.now(dt.UTC)
    )
    assert claims.report_data == recovery_report_data(
        nonce,
        challenge.hpke_key,
        challenge.recovery_nonce,
        challenge.head_pointer,
        challenge.head_transitions,
    )
    api, _ = await _stale_api(emulator_dir, peer_ready=False)
    assert (await api.recover_challenge(RecoveryChallengeRequest(nonce=nonce), None)).replica == "m9"  # type: ignore[arg-type]


async def test_ready_peer_probe(private_nats, emulator_dir: Path) -> None:
    nc = await nats.connect(private_nats.url)
    try:
        probe = PeerRecovery(
            nc,
            ManifestReplica(MemoryKeyValue()),
            platform=None,  # type: ignore[arg-type]
            verifier=None,  # type: ignore[arg-type]
            name="x",
            pins=CoordinatorPins(),
        )
        assert not await probe.ready_peer_exists()  # nobody answers
        async with replica(private_nats.url, emulator_dir, "m1"):
            assert not await probe.ready_peer_exists()  # an uninitialized replica cannot issue join nonces
            req = SetManifestRequest(
                nonce=secrets.token_bytes(32),
                manifest=encode(manifest_obj(emulator_dir)),
                policies=list(POLICIES.values()),
            )
            await request(nc, subjects.USER_MANIFEST_SET, req, AttestedReply, timeout=20)
            assert await probe.ready_peer_exists()
    finally:
        await nc.close()


async def test_a_stale_replica_says_recovery_is_needed_only_when_no_peer_is_ready(emulator_dir: Path) -> None:
    """``get`` and ``set`` on a stale replica: ``state.replica_stale`` (retry: the ready peer answers, or this
    replica recovers from it) while a peer is ready; ``state.recovery_needed`` (stop waiting) when none is."""
    get = GetManifestRequest(nonce=secrets.token_bytes(32))
    put = SetManifestRequest(
        nonce=secrets.token_bytes(32),
        manifest=encode(manifest_obj(emulator_dir)),
        policies=list(POLICIES.values()),
    )
    for peer_ready, code in [(True, "state.replica_stale"), (False, "state.recovery_needed")]:
        api, _ = await _stale_api(emulator_dir, peer_ready=peer_ready)
        for call in (api.get(get, None), api.set(put, None)):  # type: ignore[arg-type]
            with pytest.raises(ContrastError) as e:
                await call
            assert e.value.code == code, peer_ready
