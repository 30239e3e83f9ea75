"""The happy path against a real nats-server: nonce → evidence → verdict → sealed bundle → files."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contrast import subjects
from contrast.errors import ContrastError
from contrast.evidence.snp.emulator import EmulatedSnpPlatform
from contrast.evidence.tdx.emulator import EmulatedTdxPlatform
from contrast.initializer.files import write_credentials
from contrast.pki.chain import verify_leaf
from contrast.pki.mesh import leaf_claims
from contrast.runtime.natsserver import NatsServer
from tests.services.evil_bus import eventually
from tests.services.pipeline import DB_SANS, DB_SECRET_ID, H_DB, H_WEB, manifest_doc, pipeline, set_manifest


async def test_initializer_gets_a_checked_bundle(private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform,
                                                tmp_path: Path) -> None:  # fmt: skip
    async with pipeline(private_nats.url, snp_emulator) as p:
        creds = await p.initializer(H_DB).attest()
        b = creds.bundle
        now = dt.datetime.now(dt.UTC)
        # The leaf certifies our key, names our policy and the manifest's SANs and secret id ...
        assert b.leaf.public_key() == creds.tls_key.public_key()
        claims = leaf_claims(b.leaf)
        assert claims.policy_hash == H_DB
        assert claims.tee == "snp"
        assert claims.workload_secret_id == DB_SECRET_ID
        san = b.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(v.value) for v in san] == DB_SANS
        # ... and chains to both anchors.
        verify_leaf(b.leaf, anchor=b.mesh_ca, now=now)
        verify_leaf(b.leaf, anchor=b.root_ca, intermediates=[b.intermediate], now=now)
        # The workload secret is the seed-derived one for its id.
        assert b.workload_secret == p.state.engine.workload_secret(DB_SECRET_ID)
        # A workload without a secret id gets none.
        web = await p.initializer(H_WEB).attest()
        assert web.bundle.workload_secret == b""
        paths = write_credentials(tmp_path, creds.tls_key, b)
    tls = tmp_path / "tls-config"
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert modes == {
        "tls-config/mesh-ca.pem": 0o444,
        "tls-config/certChain.pem": 0o444,
        "tls-config/coordinator-root-ca.pem": 0o444,
        "tls-config/key.pem": 0o400,
        "secrets/workload-secret-seed": 0o400,
    }
    chain = x509.load_pem_x509_certificates((tls / "certChain.pem").read_bytes())
    assert [c.subject for c in chain] == [b.leaf.subject, b.intermediate.subject]
    key = serialization.load_pem_private_key((tls / "key.pem").read_bytes(), None)
    assert key.public_key() == creds.tls_key.public_key()
    assert bytes.fromhex((tmp_path / "secrets" / "workload-secret-seed").read_text()) == b.workload_secret


async def test_tdx_workload_gets_its_bundle(
    private_nats: NatsServer, tdx_emulator: EmulatedTdxPlatform
) -> None:
    """The same pipeline on emulated TDX: identity from MR_CONFIG_ID[0:32], Coordinator on TDX as well."""
    async with pipeline(private_nats.url, tdx_emulator) as p:
        creds = await p.initializer(H_DB).attest()
        claims = leaf_claims(creds.bundle.leaf)
        assert claims.policy_hash == H_DB
        assert claims.tee == "tdx"
        assert creds.bundle.workload_secret == p.state.engine.workload_secret(DB_SECRET_ID)


async def test_manifest_update_rotates_mesh_ca_and_keeps_root(
    private_nats: NatsServer, snp_emulator: EmulatedSnpPlatform
) -> None:
    async with pipeline(private_nats.url, snp_emulator) as p:
        before = await p.initializer(H_DB).attest()
        raw, policies = manifest_doc(snp_emulator, web_sans=["web2.default.svc"])
        await set_manifest(p.nc, p.state, raw, policies)
        await p.nc.publish(subjects.EVENT_MANIFEST_UPDATED, b"a hint; replicas re-read the history")
        ca = p.running["ca-1"].runtime.metrics
        await eventually(lambda: ca.registry.get_sample_value("contrast_manifest_generation") == 2)
        after = await p.initializer(H_DB).attest()
        assert after.bundle.generation == 2
        assert after.bundle.root_ca == before.bundle.root_ca
        assert after.bundle.mesh_ca != before.bundle.mesh_ca
        now = dt.datetime.now(dt.UTC)
        # The old leaf still chains to the root through its own intermediate, but not to the new mesh CA.
        verify_leaf(
            before.bundle.leaf,
            anchor=after.bundle.root_ca,
            intermediates=[before.bundle.intermediate],
            now=now,
        )
        with pytest.raises(ContrastError):
            verify_leaf(before.bundle.leaf, anchor=after.bundle.mesh_ca, now=now)
        web = await p.initializer(H_WEB).attest()
        san = web.bundle.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(v.value) for v in san] == ["web2.default.svc"]
