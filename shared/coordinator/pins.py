"""What a pod's measured policy pins about the Coordinator it trusts: policy hashes per role, and its root.

A pod (or a Coordinator replica) knows nothing about the Coordinator before it talks to it, and the bus can
point it anywhere. So ``contrast generate`` writes what it may trust into environment variables of the pod
spec, which the runtime policy pins and the pod's policy hash therefore covers:

``CONTRAST_COORDINATOR_POLICY_HASHES``
    ``<role>:<64 hex>`` items, comma-separated, role ``manifest``, ``verifier`` or ``ca``: the Coordinator
    policy hashes per service role. An initializer believes a sealed bundle only from a ``ca`` policy and a
    rejection only from a ``verifier`` policy; a joining verifier or CA replica accepts a join grant only from
    a ``manifest`` policy. An item without a role is refused (a single list for every role is what let one
    role's replica speak for another).
``CONTRAST_COORDINATOR_ROOT_CA_SHA256``
    optional, 64 hex digits: SHA-256 of the Coordinator's root CA certificate (DER), which ``generate
    --coordinator-root`` writes after the first ``set``. A pinned pod refuses a Coordinator with another root
    (``policy.coordinator_root_mismatch``), so that a wiped store or a second Coordinator of the same release
    cannot hand it secrets; a pinned replica refuses to adopt keys or a seed that do not derive that root.
``CONTRAST_PEER_TDX_TCB_STATUSES``
    optional, comma-separated: the TDX TCB statuses besides ``UpToDate`` that the manifest's reference values
    accept, for peers (:mod:`contrast.evidence.peertcb`). ``Revoked`` is never accepted.

Unset variables pin nothing: an empty role fails closed where it is needed (``policy.no_reference_values``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from contrast.errors import PolicyError
from contrast.evidence.peertcb import DEFAULT_PEER_TDX_STATUSES, NEVER_ACCEPTABLE_TDX_STATUSES
from contrast.evidence.tdx.reference import TCB_STATUSES
from contrast.pki.service import ServiceRole

POLICY_HASHES_ENV: Final = "CONTRAST_COORDINATOR_POLICY_HASHES"
ROOT_ENV: Final = "CONTRAST_COORDINATOR_ROOT_CA_SHA256"
TDX_STATUSES_ENV: Final = "CONTRAST_PEER_TDX_TCB_STATUSES"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def root_ca_sha256(root_ca_der: bytes) -> bytes:
    """The pinned commitment to a root CA: SHA-256 of its DER."""
    return hashlib.sha256(root_ca_der).digest()


def _hash(item: str, what: str) -> bytes:
    value = item.strip().lower()
    if not _HEX64.match(value):
        raise ValueError(f"{what}: not 64 hex digits: {item[:20]!r}")
    return bytes.fromhex(value)


@dataclass(frozen=True)
class CoordinatorPins:
    """The pinned Coordinator: policy hashes per service role, the root CA and the TDX statuses for peers."""

    policies: Mapping[ServiceRole, frozenset[bytes]] = field(default_factory=dict)
    root_ca_sha256: bytes | None = None
    tdx_statuses: frozenset[str] = DEFAULT_PEER_TDX_STATUSES

    def __post_init__(self) -> None:
        if self.root_ca_sha256 is not None and len(self.root_ca_sha256) != 32:
            raise ValueError("the pinned root CA is a 32-byte SHA-256")
        if any(len(h) != 32 for hashes in self.policies.values() for h in hashes):
            raise ValueError("Coordinator policy hashes are 32 bytes")
        bad = (set(self.tdx_statuses) - TCB_STATUSES) | (
            set(self.tdx_statuses) & NEVER_ACCEPTABLE_TDX_STATUSES
        )
        if bad:
            raise ValueError(f"TDX TCB statuses that a peer may never have: {sorted(bad)}")

    def of(self, role: ServiceRole) -> frozenset[bytes]:
        """The pinned policy hashes of ``role`` (empty: nothing of that role is trusted)."""
        return self.policies.get(role, frozenset())

    def check_root(self, root_ca_der: bytes) -> None:
        """``policy.coordinator_root_mismatch`` unless the root is pinned to ``root_ca_der`` or not at all."""
        if self.root_ca_sha256 is None:
            return
        got = root_ca_sha256(root_ca_der)
        if not hmac.compare_digest(got, self.root_ca_sha256):
            raise PolicyError(
                "coordinator_root_mismatch",
                f"the Coordinator's root CA {got.hex()[:16]}… is not the pinned root "
                f"{self.root_ca_sha256.hex()[:16]}…",
            )

    @classmethod
    def parse(cls, policy_hashes: str, root: str = "", tdx_statuses: str = "") -> CoordinatorPins:
        """From the three variables' values; ``ValueError`` names what is malformed."""
        policies: dict[ServiceRole, set[bytes]] = {}
        for item in policy_hashes.split(","):
            item = item.strip()
            if not item:
                continue
            role_name, sep, value = item.partition(":")
            if not sep:
                raise ValueError(
                    f"{POLICY_HASHES_ENV}: {item[:20]!r} names no role; write <role>:<hash> with role "
                    f"{', '.join(r.value for r in ServiceRole)}"
                )
            try:
                role = ServiceRole(role_name.strip())
            except ValueError:
                raise ValueError(f"{POLICY_HASHES_ENV}: unknown Coordinator role {role_name!r}") from None
            policies.setdefault(role, set()).add(_hash(value, POLICY_HASHES_ENV))
        statuses = {s.strip() for s in tdx_statuses.split(",") if s.strip()}
        return cls(
            policies={r: frozenset(h) for r, h in policies.items()},
            root_ca_sha256=_hash(root, ROOT_ENV) if root.strip() else None,
            tdx_statuses=DEFAULT_PEER_TDX_STATUSES | frozenset(statuses),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CoordinatorPins:
        return cls.parse(env.get(POLICY_HASHES_ENV, ""), env.get(ROOT_ENV, ""), env.get(TDX_STATUSES_ENV, ""))


def format_policy_hashes(policies: Iterable[tuple[ServiceRole, str]]) -> str:
    """The value of ``CONTRAST_COORDINATOR_POLICY_HASHES`` for (role, hex hash) pairs, in a stable order."""
    order = {r: i for i, r in enumerate(ServiceRole)}
    items = sorted(set(policies), key=lambda p: (order[p[0]], p[1]))
    return ",".join(f"{role.value}:{h}" for role, h in items)
