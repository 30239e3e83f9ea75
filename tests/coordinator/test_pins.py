"""The Coordinator pins of a pod's measured environment: one policy list per role, the root, TDX statuses."""

from __future__ import annotations

import hashlib

import pytest

from contrast.coordinator.pins import CoordinatorPins, format_policy_hashes, root_ca_sha256
from contrast.errors import PolicyError
from contrast.pki.service import ServiceRole

A, B, C = ("aa" * 32), ("bb" * 32), ("cc" * 32)


def test_round_trip_per_role() -> None:
    value = format_policy_hashes([(ServiceRole.CA, B), (ServiceRole.VERIFIER, A), (ServiceRole.CA, C)])
    assert value == f"verifier:{A},ca:{B},ca:{C}"
    pins = CoordinatorPins.parse(value)
    assert pins.of(ServiceRole.VERIFIER) == {bytes.fromhex(A)}
    assert pins.of(ServiceRole.CA) == {bytes.fromhex(B), bytes.fromhex(C)}
    assert pins.of(ServiceRole.MANIFEST) == frozenset()  # nothing pinned: nothing of that role is trusted
    assert pins.root_ca_sha256 is None
    assert pins.tdx_statuses == {"UpToDate"}
    assert CoordinatorPins.parse(f" manifest:{A.upper()} , ").of(ServiceRole.MANIFEST) == {bytes.fromhex(A)}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (A, "names no role"),  # the old single list: one role's replica could speak for another
        (f"root:{A}", "unknown Coordinator role"),
        (f"ca:{A[:-2]}", "not 64 hex digits"),
        ("ca:", "not 64 hex digits"),
    ],
)
def test_malformed_policy_pins_are_errors(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CoordinatorPins.parse(value)


def test_the_root_pin() -> None:
    root = b"root certificate DER"
    pins = CoordinatorPins.parse("", root_ca_sha256(root).hex())
    pins.check_root(root)
    with pytest.raises(PolicyError) as e:
        pins.check_root(b"another root")
    assert e.value.code == "policy.coordinator_root_mismatch"
    CoordinatorPins().check_root(b"anything: no pin, today's behaviour")
    with pytest.raises(ValueError, match="CONTRAST_COORDINATOR_ROOT_CA_SHA256"):
        CoordinatorPins.parse("", hashlib.sha256(b"x").hexdigest()[:10])


def test_tdx_statuses_never_include_the_unacceptable() -> None:
    pins = CoordinatorPins.parse("", "", "OutOfDate, SWHardeningNeeded")
    assert pins.tdx_statuses == {"UpToDate", "OutOfDate", "SWHardeningNeeded"}
    for bad in ("Revoked", "NoMatch", "Whatever"):
        with pytest.raises(ValueError, match="may never have"):
            CoordinatorPins.parse("", "", bad)


def test_from_env() -> None:
    env = {
        "CONTRAST_COORDINATOR_POLICY_HASHES": f"manifest:{A}",
        "CONTRAST_COORDINATOR_ROOT_CA_SHA256": B,
        "CONTRAST_PEER_TDX_TCB_STATUSES": "OutOfDate",
    }
    pins = CoordinatorPins.from_env(env)
    assert pins.of(ServiceRole.MANIFEST) == {bytes.fromhex(A)}
    assert pins.root_ca_sha256 == bytes.fromhex(B)
    assert "OutOfDate" in pins.tdx_statuses
    assert CoordinatorPins.from_env({}) == CoordinatorPins()
