"""``python -m contrast.initializer`` as a pod runs it: files with their modes, or an exit with a reason."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from contrast.coordinator.pins import ROOT_ENV, root_ca_sha256
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.pki.root import root_certificate
from contrast.runtime.natsserver import NatsServer
from tests.services.pipeline import H_CA, H_DB, H_UNKNOWN, H_VERIFIER, pipeline


async def _run(
    url: str,
    emulator_dir: Path,
    root: Path,
    policy: bytes,
    *extra: str,
    env_extra: dict[str, str] | None = None,
) -> tuple[int, str]:
    env = {
        **os.environ,
        "CONTRAST_NATS_URL": url,
        "CONTRAST_PLATFORM": "emulated-snp",
        "CONTRAST_EMULATOR_DIR": str(emulator_dir),
        "CONTRAST_EMULATED_POLICY_HASH": policy.hex(),
        "CONTRAST_COORDINATOR_POLICY_HASHES": f"verifier:{H_VERIFIER.hex()},ca:{H_CA.hex()}",
        "CONTRAST_LOG_LEVEL": "WARNING",
        **(env_extra or {}),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "contrast.initializer",
        "--root",
        str(root),
        *extra,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, err.decode(errors="replace")


async def test_initializer_writes_files_or_fails_with_a_reason(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform, emulator_dir: Path, tmp_path: Path
) -> None:
    async with pipeline(private_nats.url, snp_emulator):
        code, _ = await _run(private_nats.url, emulator_dir, tmp_path / "ok", H_DB)
        assert code == 0
        modes = {
            p.relative_to(tmp_path / "ok").as_posix(): stat.S_IMODE(p.stat().st_mode)
            for p in (tmp_path / "ok").rglob("*")
            if p.is_file()
        }
        assert modes == {
            "tls-config/mesh-ca.pem": 0o444,
            "tls-config/certChain.pem": 0o444,
            "tls-config/coordinator-root-ca.pem": 0o444,
            "tls-config/key.pem": 0o400,
            "secrets/workload-secret-seed": 0o400,
        }
        code, err = await _run(private_nats.url, emulator_dir, tmp_path / "no", H_UNKNOWN, "--deadline", "3")
        assert code == 1
        assert "policy.policy_unknown" in err
        assert not (tmp_path / "no").exists()
        code, err = await _run("nats://127.0.0.1:1", emulator_dir, tmp_path / "x", H_DB, "--deadline", "1")
        assert code == 1
        assert "NATS" in err


async def test_a_pinned_pod_refuses_a_coordinator_with_another_root(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform, emulator_dir: Path, tmp_path: Path
) -> None:
    """Finding 4: after a wiped store (or with a second Coordinator of the same release), genuine Coordinator
    code answers with another root CA. A pod whose policy pins the root writes nothing."""
    async with pipeline(private_nats.url, snp_emulator) as p:
        root_der = root_certificate(p.state.engine.root_ca_key()).public_bytes(serialization.Encoding.DER)
        other = {ROOT_ENV: hashlib.sha256(b"the root of the owner's Coordinator").hexdigest()}
        code, err = await _run(
            private_nats.url, emulator_dir, tmp_path / "other", H_DB, "--deadline", "4", env_extra=other
        )
        assert code == 1
        assert "policy.coordinator_root_mismatch" in err
        assert not (tmp_path / "other").exists()
        pinned = {ROOT_ENV: root_ca_sha256(root_der).hex()}
        code, err = await _run(private_nats.url, emulator_dir, tmp_path / "ours", H_DB, env_extra=pinned)
        assert code == 0, err
        assert (tmp_path / "ours" / "tls-config" / "coordinator-root-ca.pem").exists()
