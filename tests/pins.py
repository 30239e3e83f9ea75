"""Coordinator pins for tests whose Coordinator is one policy in every role (roles are not their subject)."""

from __future__ import annotations

from contrast.coordinator.pins import CoordinatorPins
from contrast.pki.service import ServiceRole


def pins_for_every_role(policy_hash: bytes, *, root_ca_sha256: bytes | None = None) -> CoordinatorPins:
    return CoordinatorPins(
        policies={role: frozenset({policy_hash}) for role in ServiceRole}, root_ca_sha256=root_ca_sha256
    )
