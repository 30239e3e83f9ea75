"""How a Coordinator replica (verifier or CA) becomes a member of the trust domain and gets its role keys.

A replica starts **not ready**, with nothing but its platform.
A :class:`KeySource` turns that identity into a :class:`Membership`: a root-issued service certificate for
the identity's service key with the replica's role, the public CA certificates, the generation and history
head, the history public key, and the opened :class:`~contrast.coordinator.rolekeys.RoleKeys` (only the
secrets of that role).

The source in production is :class:`JoinKeySource`: :func:`contrast.replica.join.join` (docs/protocol.md §4)
against a ready manifest replica whose policy this replica's measured configuration pins. Tests inject
another one (:mod:`contrast.testing.fixture`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from nats.aio.client import Client

from contrast.coordinator.pins import CoordinatorPins
from contrast.coordinator.rolekeys import RoleKeys
from contrast.coordinator.statement import CoordinatorIdentity
from contrast.evidence.verifier import EvidenceVerifier
from contrast.pki.service import ServiceRole, replica_label
from contrast.platform.base import Platform
from contrast.replica.join import join


@dataclass(frozen=True, slots=True)
class Membership:
    """What a joined replica holds. ``identity`` and ``keys`` carry secrets: never log or send them."""

    identity: CoordinatorIdentity
    role: ServiceRole
    keys: RoleKeys
    service_cert: x509.Certificate
    root_cert: x509.Certificate

    def __repr__(self) -> str:
        return f"Membership(role={self.role.value}, generation={self.generation})"

    @property
    def generation(self) -> int:
        return self.keys.generation

    @property
    def transition_hash(self) -> bytes:
        return self.keys.head_transition

    @property
    def history_key(self) -> ed25519.Ed25519PublicKey:
        return self.keys.history_verify_key()


class KeySource(Protocol):
    async def join(
        self, nc: Client, platform: Platform, role: ServiceRole, verifier: EvidenceVerifier
    ) -> Membership:
        """Make a fresh identity on ``platform`` and obtain its membership as ``role``, or raise."""
        ...


class JoinKeySource:
    """The real join (docs/protocol.md §4) through :func:`contrast.replica.join.join`."""

    def __init__(self, replica: str, pins: CoordinatorPins, *, timeout: float = 30.0) -> None:
        self._replica = replica_label(replica)
        self._pins = pins
        self._timeout = timeout

    async def join(
        self, nc: Client, platform: Platform, role: ServiceRole, verifier: EvidenceVerifier
    ) -> Membership:
        result = await join(
            nc,
            platform,
            role,
            replica=self._replica,
            verifier=verifier,
            pins=self._pins,
            timeout=self._timeout,
        )
        return Membership(
            identity=result.identity,
            role=role,
            keys=result.keys,
            service_cert=result.service_cert,
            root_cert=result.root_cert,
        )
