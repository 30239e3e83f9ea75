"""Synthetic deployments for the local-runner unit tests: a root CA, a mesh CA and pod credentials on disk,
written by the initializer's own writer, so the files look exactly like an attested pod's."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.attestation.bundle import OpenedBundle
from contrast.initializer.files import write_credentials
from contrast.pki.mesh import MeshAuthority, new_mesh_authority
from contrast.pki.root import root_certificate


@dataclass(frozen=True)
class Deployment:
    root: x509.Certificate
    mesh: MeshAuthority

    @classmethod
    def new(cls) -> Deployment:
        root_key = ec.generate_private_key(ec.SECP384R1())
        root = root_certificate(root_key)
        return cls(root, new_mesh_authority(root_key, root, now=dt.datetime.now(dt.UTC)))

    def pod(self, directory: Path, name: str, *, secret_id: str = "") -> bytes:
        """Write ``directory/tls-config/...`` for pod ``name``; returns its policy hash."""
        policy_hash = hashlib.sha256(f"policy of {name}".encode()).digest()
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = self.mesh.issue_leaf(
            key.public_key(),
            sans=[name, "*"],
            policy_hash=policy_hash,
            tee="snp",
            workload_secret_id=secret_id,
            now=dt.datetime.now(dt.UTC),
        )
        bundle = OpenedBundle(
            leaf=leaf,
            intermediate=self.mesh.intermediate,
            mesh_ca=self.mesh.mesh_ca,
            root_ca=self.root,
            workload_secret=secrets.token_bytes(64) if secret_id else b"",
            workload_secret_id=secret_id,
            generation=1,
        )
        write_credentials(directory, key, bundle)
        return policy_hash
