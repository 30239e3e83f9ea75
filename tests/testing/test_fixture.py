"""The INSECURE fixture key source serves emulated platforms only."""

from __future__ import annotations

from pathlib import Path

import pytest

from contrast.errors import StateError
from contrast.pki.service import ServiceRole
from contrast.replica.deps import ReplicaDeps
from contrast.replica.membership import JoinKeySource
from contrast.testing.fixture import FixtureKeySource, FixtureState
from contrast.testing.kv import MemoryKeyValue
from contrast.testing.replica import fixture_deps
from contrast.testing.replica import main as replica_main

KEY = bytes(range(32))
H_VERIFIER = b"\xc0" * 32  # the Coordinator policy the test verifier joined with
ALLOWED = frozenset({H_VERIFIER, b"\xc1" * 32})
NOW_MS = 1_800_000_000_000


async def test_fixture_key_source_refuses_real_hardware() -> None:
    from contrast.evidence.verifier import EvidenceVerifier
    from contrast.testing.fixture import FixtureKeySource, FixtureState

    class RealLooking:
        tee = "snp"
        name = "configfs-tsm"
        emulator_root = None

        async def evidence(self, report_data: bytes) -> object:
            raise AssertionError("must not even ask for evidence")

    source = FixtureKeySource(FixtureState.generate(), MemoryKeyValue(), "v1")
    with pytest.raises(StateError) as e:
        await source.join(None, RealLooking(), ServiceRole.VERIFIER, EvidenceVerifier())  # type: ignore[arg-type]
    assert e.value.code == "state.insecure_fixture_refused"


def test_the_fixture_replica_refuses_a_real_platform(tmp_path: Path) -> None:
    FixtureState.generate(tmp_path)
    for platform in ("", "auto", "configfs-tsm", "sev-guest"):
        with pytest.raises(ValueError, match="emulated"):
            fixture_deps({"CONTRAST_INSECURE_FIXTURE_DIR": str(tmp_path), "CONTRAST_PLATFORM": platform})
    deps = fixture_deps({"CONTRAST_INSECURE_FIXTURE_DIR": str(tmp_path), "CONTRAST_PLATFORM": "emulated-snp"})
    assert isinstance(deps.key_source("verifier-1", deps.pins), FixtureKeySource)


def test_the_fixture_replica_without_a_fixture_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTRAST_INSECURE_FIXTURE_DIR", raising=False)
    monkeypatch.setenv("CONTRAST_PLATFORM", "emulated-snp")
    assert replica_main(["verifier"]) == 2
    assert replica_main(["manifest"]) == 2  # only verifier and CA replicas run on the fixture


def test_production_replicas_always_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FixtureState.generate(tmp_path)
    monkeypatch.setenv("CONTRAST_INSECURE_FIXTURE_DIR", str(tmp_path))
    monkeypatch.setenv("CONTRAST_PLATFORM", "emulated-snp")
    deps = ReplicaDeps()
    assert isinstance(deps.key_source("verifier-1", deps.pins), JoinKeySource)


def test_a_malformed_pin_stops_a_replica_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pins are read when the replica is built, and a malformed one is an error, never an empty pin."""
    monkeypatch.setenv("CONTRAST_COORDINATOR_POLICY_HASHES", "ab" * 32)  # no role
    with pytest.raises(ValueError, match="names no role"):
        ReplicaDeps()
    monkeypatch.setenv("CONTRAST_COORDINATOR_POLICY_HASHES", f"manifest:{'ab' * 32}")
    monkeypatch.setenv("CONTRAST_COORDINATOR_ROOT_CA_SHA256", "not hex")
    with pytest.raises(ValueError, match="CONTRAST_COORDINATOR_ROOT_CA_SHA256"):
        ReplicaDeps()
    monkeypatch.setenv("CONTRAST_COORDINATOR_ROOT_CA_SHA256", "cd" * 32)
    deps = ReplicaDeps()
    assert deps.pins.of(ServiceRole.MANIFEST) == {bytes.fromhex("ab" * 32)}
    assert deps.pins.root_ca_sha256 == bytes.fromhex("cd" * 32)
