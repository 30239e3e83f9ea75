"""Coordinator workloads in the user's YAML: which service role each runs, and what each pod pins.

A Coordinator pod (annotation ``pod-role: coordinator``) runs exactly one of the Coordinator services, as
``<python> -m contrast.<manifest|verifier|ca>``. That service is the role its policy is bound to in the
manifest (``CoordinatorRole``): ``generate`` reads it from the command, so the YAML and the manifest cannot
disagree. One pod running two services (one policy for two roles) is refused.

What each pod's measured environment pins (:mod:`contrast.coordinator.pins`):

- a workload's initializer: the ``verifier`` and ``ca`` policy hashes (who may reject and who may issue);
- a verifier or CA replica: the ``manifest`` policy hashes (who may grant its join);
- all of them, and the manifest service: the TDX TCB statuses the reference values accept beyond
  ``UpToDate``, for their peer checks;
- workloads, verifiers and CAs: the root CA, once the owner pins it (``generate --coordinator-root``). The
  manifest service is not pinned by ``generate``: that would change its policy hash, and a manifest replica
  hands the seed only to its own exact policy, so every running replica would need ``contrast recover``.
  A root pin set on it by hand is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from contrast.coordinator.pins import POLICY_HASHES_ENV, ROOT_ENV, TDX_STATUSES_ENV, format_policy_hashes
from contrast.errors import RequestError
from contrast.evidence.peertcb import DEFAULT_PEER_TDX_STATUSES, NEVER_ACCEPTABLE_TDX_STATUSES
from contrast.generate import inject
from contrast.generate.workloads import Workload
from contrast.pki.service import ServiceRole

_MODULES: Final = {f"contrast.{r.value}": r for r in ServiceRole}


def _argv(container: dict[str, Any]) -> list[str]:
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    return [a for a in argv if isinstance(a, str)]


def service_container(w: Workload) -> tuple[ServiceRole, dict[str, Any]]:
    """The one container of a Coordinator pod that runs a Coordinator service, and that service's role."""
    found: list[tuple[ServiceRole, dict[str, Any]]] = []
    containers = w.pod_spec.get("containers")
    for c in containers if isinstance(containers, list) else []:
        if not isinstance(c, dict):
            continue
        argv = _argv(c)
        for i, arg in enumerate(argv[:-1]):
            if arg == "-m" and argv[i + 1] in _MODULES:
                found.append((_MODULES[argv[i + 1]], c))
                break
    if len(found) != 1:
        names = ", ".join(f"{r.value} ({c.get('name')})" for r, c in found) or "none"
        raise RequestError(
            "workload_invalid",
            f"{w.ref}: a Coordinator pod runs exactly one Coordinator service "
            f"(python -m contrast.manifest, contrast.verifier or contrast.ca), found {names}; each service "
            "needs its own pod and policy, because a policy is bound to one role",
        )
    return found[0]


def existing_root_pins(containers: Iterable[Any]) -> set[str]:
    """The root pins already written into these containers (to keep a pin when generate runs again)."""
    values = {inject.container_env(c, ROOT_ENV) for c in containers}
    return {v for v in values if v}


def peer_tdx_statuses(refvals: Any) -> str:
    """``CONTRAST_PEER_TDX_TCB_STATUSES``: what the TDX reference values accept beyond ``UpToDate`` (never
    ``Revoked``); empty when nothing more."""
    statuses: set[str] = set()
    entries = refvals.get("tdx") if isinstance(refvals, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        accepted = entry.get("AcceptedTCBStatuses") if isinstance(entry, dict) else None
        if isinstance(accepted, list):
            statuses |= {s for s in accepted if isinstance(s, str)}
    statuses -= DEFAULT_PEER_TDX_STATUSES | NEVER_ACCEPTABLE_TDX_STATUSES
    return ",".join(sorted(statuses))


def pins_for(
    role: ServiceRole | None,
    hashes: dict[ServiceRole, list[str]],
    *,
    root: str | None,
    tdx_statuses: str,
    kept_root: str | None = None,
) -> dict[str, str]:
    """The pin variables of one pod: ``role`` is its Coordinator role, None for a workload's initializer.
    ``kept_root`` is a manifest service's own hand-set root pin, which generate leaves as it is."""
    out: dict[str, str] = {}
    trusted = {
        None: (ServiceRole.VERIFIER, ServiceRole.CA),
        ServiceRole.VERIFIER: (ServiceRole.MANIFEST,),
        ServiceRole.CA: (ServiceRole.MANIFEST,),
        ServiceRole.MANIFEST: (),
    }[role]
    if trusted:
        out[POLICY_HASHES_ENV] = format_policy_hashes((r, h) for r in trusted for h in hashes.get(r, []))
    pinned_root = kept_root if role is ServiceRole.MANIFEST else root
    if pinned_root:
        out[ROOT_ENV] = pinned_root
    if tdx_statuses:
        out[TDX_STATUSES_ENV] = tdx_statuses
    return out
