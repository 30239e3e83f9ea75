"""The owners' CLI end to end, against real replica processes on a real nats-server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from contrast.runtime.natsserver import NatsServer
from tests.cli.owner.owner_cli import POLICY_FILES, Cli, write_manifest
from tests.services.manifest.mfs_helpers import start_replica_process


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_set_verify_update_verify(
    cli: Cli,
    workspace: Path,
    emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
    tmp_path: Path,
) -> None:
    proc = start_replica_process(emulator_dir, private_nats.url, "manifest-1", tmp_path)
    try:
        manifest = write_manifest(workspace, emulator_dir, keys)
        # An invalid manifest is explained path by path, before anything is sent.
        bad = json.loads(manifest.read_text())
        del bad["ReferenceValues"]["snp"][0]["MinimumTCB"]["BootloaderVersion"]
        (workspace / "bad.json").write_text(json.dumps(bad))
        rc, out, _ = cli("set", "-m", "bad.json", *POLICY_FILES)
        assert rc == 1
        assert out["code"] == "request.invalid_manifest"
        assert "ReferenceValues.snp[0].MinimumTCB.BootloaderVersion: must be set" in out["message"]
        rc, out, _ = cli("set", "-m", "manifest.json", "coordinator.rego")
        assert (rc, out["code"]) == (1, "request.policy_missing")
        rc, out, _ = cli("verify", "-m", "missing.json")
        assert (rc, out["code"]) == (2, "usage")

        rc, out, err = cli("set", "-m", "manifest.json", *POLICY_FILES)
        assert rc == 0, err
        assert out["generation"] == 1
        assert sorted(out["files"]) == ["coordinator-root-ca.pem", "mesh-ca.pem", "seed-shares.json"]
        root1, mesh1 = _cert(workspace / "coordinator-root-ca.pem"), _cert(workspace / "mesh-ca.pem")
        assert (workspace / "seed-shares.json").stat().st_mode & 0o077 == 0

        rc, out, err = cli("verify", "-m", "manifest.json")
        assert rc == 0, err
        assert out["manifests"] == 1

        # An update signed by the workload owner (the key in the workspace).
        write_manifest(workspace, emulator_dir, keys, db_sans=["db", "db.internal"])
        rc, out, err = cli("set", "-m", "manifest.json", *POLICY_FILES)
        assert rc == 0, err
        assert out["generation"] == 2
        assert "seed-shares.json" not in out["files"]
        root2, mesh2 = _cert(workspace / "coordinator-root-ca.pem"), _cert(workspace / "mesh-ca.pem")
        assert root2 == root1
        assert mesh2 != mesh1

        rc, out, err = cli("verify", "-m", "manifest.json")
        assert rc == 0, err
        assert out["manifests"] == 2
        verify = workspace / "verify"
        assert (verify / "manifest.1.json").read_bytes() == manifest.read_bytes()
        assert (verify / "manifest.0.json").read_bytes() != manifest.read_bytes()
        assert _cert(verify / "coordinator-root-ca.pem") == root1
        assert _cert(verify / "mesh-ca.pem") == mesh2
        assert len(list((verify / "policies").iterdir())) == 4
        assert (verify / "latest-transition").stat().st_size == 116

        # verify exits 1 when the local manifest is not the active one (here: the first one), and writes
        # nothing: no CA certificate that a caller could mistake for a verified one, no trusted state.
        (workspace / "old.json").write_bytes((verify / "manifest.0.json").read_bytes())
        verify.rename(workspace / "verified-before")
        rc, out, _ = cli("verify", "-m", "old.json")
        assert rc == 1
        assert out["code"] == "verify.manifest_mismatch"
        assert out["trusted_state"]["written"] is False
        assert not verify.exists()
    finally:
        proc.terminate()


@pytest.mark.slow  # the refusals also run by default in tests/services/manifest/test_lifecycle.py
def test_update_refusals_and_detached_signatures(
    cli: Cli,
    workspace: Path,
    emulator_dir: Path,
    keys: dict[str, Any],
    private_nats: NatsServer,
    tmp_path: Path,
) -> None:
    proc = start_replica_process(emulator_dir, private_nats.url, "manifest-1", tmp_path)
    try:
        write_manifest(workspace, emulator_dir, keys)
        assert cli("set", "-m", "manifest.json", *POLICY_FILES)[0] == 0
        # Without the owner key: refused, and the CLI says what is missing.
        (workspace / "workload-owner.pem").rename(workspace / "owner.pem")
        write_manifest(workspace, emulator_dir, keys, db_sans=["db", "v2"])
        rc, out, _ = cli("set", "-m", "manifest.json", *POLICY_FILES)
        assert (rc, out["code"]) == (1, "auth.signature_required")
        assert out["hint"]
        # HSM flow: prepare, sign outside (here: with the key file), import the DER signature, set --atomic.
        rc, out, err = cli("sign", "--prepare", "-m", "manifest.json")
        assert rc == 0, err
        request_doc = json.loads((workspace / "transition-request.json").read_text())
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = serialization.load_pem_private_key((workspace / "owner.pem").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        (workspace / "sig.der").write_bytes(
            key.sign(bytes.fromhex(request_doc["Message"]), ec.ECDSA(hashes.SHA384()))
        )
        rc, out, err = cli(
            "sign", "--der-signature", "sig.der", "--request", "transition-request.json", "-w", "owner.pem"
        )
        assert rc == 0, err
        rc, out, err = cli(
            "set",
            "-m",
            "manifest.json",
            "--signature",
            "transition-signature.json",
            "--atomic",
            *POLICY_FILES,
        )
        assert rc == 0, err
        assert out["generation"] == 2
        # Replaying the same signed set: that manifest is active already, so nothing changes.
        rc, out, _ = cli(
            "set",
            "-m",
            "manifest.json",
            "--signature",
            "transition-signature.json",
            *POLICY_FILES,
        )
        assert (rc, out["changed"], out["generation"]) == (0, False, 2)
        # A signature prepared against generation 1, sent --atomic after the history moved: stale.
        write_manifest(workspace, emulator_dir, keys, name="v3.json", db_sans=["db", "v3"])
        rc, out, err = cli(
            "sign",
            "-m",
            "v3.json",
            "-w",
            "owner.pem",
            "--previous",
            request_doc["PreviousTransition"],
            "-o",
            "v3.sig.json",
        )
        assert rc == 0, err
        rc, out, _ = cli("set", "-m", "v3.json", "--signature", "v3.sig.json", "--atomic", *POLICY_FILES)
        assert (rc, out["code"]) == (1, "state.stale")
    finally:
        proc.terminate()
