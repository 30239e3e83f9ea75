from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.crypto.kdf import SeedEngine
from contrast.pki.mesh import MeshAuthority, new_mesh_authority
from contrast.pki.root import root_certificate

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def engine() -> SeedEngine:
    return SeedEngine(bytes(range(64)), bytes(range(32)))


@pytest.fixture(scope="session")
def root_key(engine: SeedEngine) -> ec.EllipticCurvePrivateKey:
    return engine.root_ca_key()


@pytest.fixture(scope="session")
def root_cert(root_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return root_certificate(root_key)


@pytest.fixture(scope="session")
def mesh(root_key: ec.EllipticCurvePrivateKey, root_cert: x509.Certificate) -> MeshAuthority:
    return new_mesh_authority(root_key, root_cert, now=NOW)
