"""Test and benchmark builders for mesh credentials, made with the Coordinator's own PKI code.

A :class:`Generation` is one manifest generation's mesh authority under a root CA (derived from a seed, as
the Coordinator's); :meth:`Generation.write_pod` lays out a pod's ``tls-config`` directory exactly as the
initializer does. Another seed gives a foreign CA with the same names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.crypto.kdf import SeedEngine
from contrast.initializer.files import PRIVATE, PUBLIC, write_atomic
from contrast.pki.mesh import MeshAuthority, new_mesh_authority
from contrast.pki.root import root_certificate

PEM = serialization.Encoding.PEM


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Generation:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    authority: MeshAuthority

    @classmethod
    def new(cls, seed: int = 1) -> Generation:
        root_key = SeedEngine(bytes([seed]) * 64, bytes([seed]) * 32).root_ca_key()
        root = root_certificate(root_key)
        return cls(root_key, root, new_mesh_authority(root_key, root, now=now()))

    def rotated(self) -> Generation:
        """The next generation under the same root (what a manifest update does)."""
        return Generation(self.root_key, self.root, new_mesh_authority(self.root_key, self.root, now=now()))

    def leaf(
        self,
        key: ec.EllipticCurvePrivateKey,
        sans: list[str],
        *,
        issued: dt.datetime | None = None,
        validity: dt.timedelta = dt.timedelta(days=1),
    ) -> x509.Certificate:
        return self.authority.issue_leaf(
            key.public_key(),
            sans=sans,
            policy_hash=b"\x11" * 32,
            tee="snp",
            now=issued or now(),
            validity=validity,
        )

    def write_pod(
        self,
        root: Path,
        sans: list[str],
        *,
        issued: dt.datetime | None = None,
        validity: dt.timedelta = dt.timedelta(days=1),
    ) -> Path:
        """Write ``<root>/tls-config`` as the initializer would; returns that directory."""
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = self.leaf(key, sans, issued=issued, validity=validity)
        tls = root / "tls-config"
        write_atomic(tls / "mesh-ca.pem", self.authority.mesh_ca.public_bytes(PEM), PUBLIC)
        write_atomic(
            tls / "certChain.pem",
            leaf.public_bytes(PEM) + self.authority.intermediate.public_bytes(PEM),
            PUBLIC,
        )
        write_atomic(tls / "coordinator-root-ca.pem", self.root.public_bytes(PEM), PUBLIC)
        write_atomic(
            tls / "key.pem",
            key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            PRIVATE,
        )
        return tls
