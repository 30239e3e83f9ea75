"""Restart and recovery: all replicas killed → stale; `contrast recover` → ready with the same root."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from pathlib import Path
from typing import Any

import nats
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from contrast import subjects
from contrast.coordinator.pins import ROOT_ENV, root_ca_sha256
from contrast.crypto.ownerkeys import load_seedshare_owner_key, public_key_hex, save_private_key
from contrast.crypto.seedshare import decode_seed_shares, decrypt_share, make_seed_shares
from contrast.runtime.natsserver import NatsServer
from tests.cli.owner.owner_cli import POLICY_FILES, Cli, write_manifest
from tests.services.manifest.mfs_helpers import H_VERIFIER, StateWatch, start_replica_process


def _share_doc(seed: bytes, salt: bytes, key: rsa.RSAPublicKey) -> bytes:
    return make_seed_shares(seed, salt, [public_key_hex(key)]).encode()


async def test_restart_then_recover_with_the_share(
    cli: Cli,
    workspace: Path,
    emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
    tmp_path: Path,
) -> None:
    nc = await nats.connect(private_nats.url)
    watch = await StateWatch().start(nc)
    proc = start_replica_process(emulator_dir, private_nats.url, "m1", tmp_path)
    try:
        write_manifest(workspace, emulator_dir, keys)
        rc, out, err = await asyncio.to_thread(cli, "set", "-m", "manifest.json", *POLICY_FILES)
        assert rc == 0, err
        root_before = (workspace / "coordinator-root-ca.pem").read_bytes()
        mesh_before = (workspace / "mesh-ca.pem").read_bytes()

        # Recovery of a ready Coordinator is refused.
        rc, out, _ = await asyncio.to_thread(cli, "recover", "-m", "manifest.json")
        assert (rc, out["code"]) == (1, "state.not_stale")

        proc.kill()
        proc = start_replica_process(emulator_dir, private_nats.url, "m1", tmp_path)
        await watch.wait("m1", "stale")

        owner = load_seedshare_owner_key(workspace / "seedshare-owner.pem")
        seed, salt = decrypt_share(owner, decode_seed_shares((workspace / "seed-shares.json").read_bytes()))

        # A share of another seed (another deployment's, or a corrupted one) is refused.
        (workspace / "wrong-shares.json").write_bytes(
            _share_doc(secrets.token_bytes(64), salt, owner.public_key())
        )
        rc, out, _ = await asyncio.to_thread(
            cli, "recover", "-m", "manifest.json", "--seed-shares", "wrong-shares.json"
        )
        assert (rc, out["code"]) == (1, "auth.wrong_seed")

        # The right seed, signed by a key that is not a seed-share owner, is refused.
        intruder = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        save_private_key(intruder, workspace / "intruder.pem")
        (workspace / "intruder-shares.json").write_bytes(_share_doc(seed, salt, intruder.public_key()))
        rc, out, _ = await asyncio.to_thread(
            cli,
            "recover",
            "-m",
            "manifest.json",
            "-k",
            "intruder.pem",
            "--seed-shares",
            "intruder-shares.json",
        )
        assert (rc, out["code"]) == (1, "auth.not_seedshare_owner")

        rc, out, err = await asyncio.to_thread(cli, "recover", "-m", "manifest.json")
        assert rc == 0, (out, err)
        await watch.wait("m1", "ready")
        assert (workspace / "coordinator-root-ca.pem").read_bytes() == root_before
        assert (workspace / "mesh-ca.pem").read_bytes() != mesh_before
        rc, out, err = await asyncio.to_thread(cli, "verify", "-m", "manifest.json")
        assert rc == 0, err
    finally:
        proc.kill()
        await nc.close()


async def test_recovery_sealed_to_a_verifier_is_refused(
    cli: Cli,
    workspace: Path,
    emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
    tmp_path: Path,
) -> None:
    """Finding 1: `contrast recover` sealed the seed to the evidence of any Coordinator policy. The operator
    answers the recovery with the verifier's genuine code (its policy is a Coordinator policy of the
    manifest, bound to the verifier role): the owner's CLI seals nothing to it."""
    url = private_nats.url
    nc = await nats.connect(url)
    watch = await StateWatch().start(nc)
    sealed: list[bytes] = []

    async def on_step2(msg: Any) -> None:
        sealed.append(msg.data)

    await nc.subscribe(f"{subjects.USER_RECOVER}.*", cb=on_step2)
    await nc.flush()
    proc = start_replica_process(emulator_dir, url, "m1", tmp_path)
    try:
        write_manifest(workspace, emulator_dir, keys)
        rc, _, err = await asyncio.to_thread(cli, "set", "-m", "manifest.json", *POLICY_FILES)
        assert rc == 0, err
        proc.kill()
        proc = start_replica_process(emulator_dir, url, "m1", tmp_path, policy_hash=H_VERIFIER)
        await watch.wait("m1", "stale")
        rc, out, _ = await asyncio.to_thread(cli, "recover", "-m", "manifest.json")
        assert (rc, out["code"]) == (1, "policy.wrong_coordinator_role")
        await nc.flush()
        assert sealed == []
        assert watch.states["m1"][0] == "stale"
        # The manifest service's own policy gets it.
        proc.kill()
        proc = start_replica_process(emulator_dir, url, "m1", tmp_path)
        rc, out, err = await asyncio.to_thread(cli, "recover", "-m", "manifest.json")
        assert rc == 0, err
        await watch.wait("m1", "ready")
        assert len(sealed) == 1
    finally:
        proc.kill()
        await nc.close()


async def test_a_pinned_replica_adopts_only_a_seed_of_its_root(
    cli: Cli,
    workspace: Path,
    emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
    tmp_path: Path,
) -> None:
    """A manifest replica whose measured configuration pins the root CA makes no first set of its own (a new
    seed is a new root) and recovers only the seed of that root."""
    url = private_nats.url
    nc = await nats.connect(url)
    watch = await StateWatch().start(nc)
    other_root = {ROOT_ENV: hashlib.sha256(b"another deployment's root").hexdigest()}
    proc = start_replica_process(emulator_dir, url, "m1", tmp_path, env=other_root)
    try:
        write_manifest(workspace, emulator_dir, keys)
        rc, out, _ = await asyncio.to_thread(cli, "set", "-m", "manifest.json", *POLICY_FILES)
        assert (rc, out["code"]) == (1, "policy.coordinator_root_mismatch")
        assert not (workspace / "seed-shares.json").exists()
        proc.kill()
        proc = start_replica_process(emulator_dir, url, "m1", tmp_path)  # unpinned: trust on first use
        rc, _, err = await asyncio.to_thread(cli, "set", "-m", "manifest.json", *POLICY_FILES)
        assert rc == 0, err
        root = x509.load_pem_x509_certificate((workspace / "coordinator-root-ca.pem").read_bytes())
        pinned = {ROOT_ENV: root_ca_sha256(root.public_bytes(serialization.Encoding.DER)).hex()}

        proc.kill()
        proc = start_replica_process(emulator_dir, url, "m1", tmp_path, env=other_root)
        await watch.wait("m1", "stale")
        rc, out, _ = await asyncio.to_thread(cli, "recover", "-m", "manifest.json")
        assert (rc, out["code"]) == (1, "policy.coordinator_root_mismatch")
        assert watch.states["m1"][0] == "stale"

        proc.kill()
        proc = start_replica_process(emulator_dir, url, "m1", tmp_path, env=pinned)
        rc, out, err = await asyncio.to_thread(cli, "recover", "-m", "manifest.json")
        assert rc == 0, err
        await watch.wait("m1", "ready")
    finally:
        proc.kill()
        await nc.close()
