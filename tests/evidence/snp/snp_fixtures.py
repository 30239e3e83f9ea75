"""Helpers for the SNP tests: the real vendor vectors and one emulated platform per session."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contrast.evidence.snp import trust, verify
from contrast.evidence.snp.emulator import EmulatedSnpPlatform

VECTORS = Path(__file__).resolve().parents[2] / "data" / "vectors"
SNP_VECTORS = sorted(p.name for p in VECTORS.glob("snp_*"))
# Inside every vector VCEK's validity window (2023-04-03 .. 2029-09-24).
VECTOR_TIME = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Vector:
    name: str
    report: bytes
    vek: bytes
    expected: dict[str, Any]

    def certs(self) -> list[bytes]:
        return [self.vek, *verify.split_certificates(trust.bundled_chain_pem("Milan"))]


def load_vector(name: str) -> Vector:
    d = VECTORS / name
    return Vector(
        name=name,
        report=(d / "report.bin").read_bytes(),
        vek=(d / "vek.der").read_bytes(),
        expected=json.loads((d / "expected.json").read_text()),
    )


@pytest.fixture(params=SNP_VECTORS)
def vector(request: pytest.FixtureRequest) -> Vector:
    return load_vector(request.param)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> EmulatedSnpPlatform:
    # RSA-4096 generation takes seconds: one platform per session, persisted so the reload path is exercised.
    return EmulatedSnpPlatform.load_or_create(tmp_path_factory.mktemp("emulated-snp"))
