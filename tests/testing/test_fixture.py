"""The INSECURE fixture key source serves emulated platforms only."""

from __future__ import annotations

import pytest

from contrast.errors import StateError
from contrast.pki.service import ServiceRole
from contrast.testing.kv import MemoryKeyValue

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
