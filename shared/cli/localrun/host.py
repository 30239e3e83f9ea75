"""The emulated Kubernetes host: which confidential pods a deployment has, and each pod's launch policy hash.

A real Kata host hashes the pod's initdata annotation and launches the CVM with that hash as SNP HOST_DATA
(TDX MR_CONFIG_ID). The emulated host does the same from the generated YAML, and refuses a pod whose
``policy-hash`` annotation disagrees with its initdata: the hash must come from the document, never from a
label next to it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrast.errors import RequestError
from contrast.generate import annotations as ann
from contrast.generate.inject import INITIALIZER_NAME
from contrast.generate.mesh import SIDECAR_NAME
from contrast.generate.policy import decode_annotation
from contrast.generate.workloads import Workload, as_workload
from contrast.generate.yamldocs import iter_yaml_paths, read_file

_UNSAFE = re.compile(r"[^a-z0-9.-]")


@dataclass(frozen=True)
class EmulatedPod:
    """One confidential pod as the host launches it."""

    name: str  # directory name under .run/pods/
    ref: str  # "Deployment emojishop/api"
    policy_hash: bytes  # SHA-256 of the initdata document: the pod's HOST_DATA / MR_CONFIG_ID[0:32]
    role: str  # "" or "coordinator"
    initializer: bool  # the Contrast initializer is the first init container
    mesh: dict[str, str] | None = None  # the mesh sidecar's environment; None: the pod has no sidecar
    ports: tuple[int, ...] = ()  # TCP ports the pod's application containers declare

    @property
    def is_coordinator(self) -> bool:
        return self.role == ann.ROLE_COORDINATOR


def _annotation(w: Workload, key: str) -> str | None:
    return ann.read(w.obj, w.template, key, w.ref)


def launch_policy_hash(w: Workload) -> bytes:
    """SHA-256 of the decoded initdata, checked against the ``policy-hash`` annotation."""
    initdata = _annotation(w, ann.KATA_INITDATA)
    if initdata is None:
        raise RequestError("initdata_missing", f"{w.ref}: no {ann.KATA_INITDATA} annotation (run generate)")
    digest = hashlib.sha256(decode_annotation(initdata)).digest()
    stated = _annotation(w, ann.POLICY_HASH)
    if stated is None or stated != digest.hex():
        raise RequestError(
            "policy_hash_mismatch", f"{w.ref}: the {ann.POLICY_HASH} annotation does not match its initdata"
        )
    return digest


def _has_initializer(w: Workload) -> bool:
    init = w.pod_spec.get("initContainers")
    return (
        bool(init)
        and isinstance(init, list)
        and isinstance(init[0], dict)
        and init[0].get("name") == (INITIALIZER_NAME)
    )


def _sidecar_env(w: Workload) -> dict[str, str] | None:
    for c in w.pod_spec.get("initContainers") or []:
        if isinstance(c, dict) and c.get("name") == SIDECAR_NAME:
            return {e["name"]: str(e.get("value", "")) for e in c.get("env") or [] if isinstance(e, dict)}
    return None


def _ports(w: Workload) -> tuple[int, ...]:
    found: list[Any] = [
        p.get("containerPort")
        for c in w.pod_spec.get("containers") or []
        if isinstance(c, dict)
        for p in c.get("ports") or []
        if isinstance(p, dict) and p.get("protocol", "TCP") == "TCP"
    ]
    return tuple(sorted({p for p in found if isinstance(p, int)}))


def discover_pods(paths: list[Path]) -> list[EmulatedPod]:
    """Every confidential workload in the YAML under ``paths``, one emulated pod each, sorted by name."""
    workloads: list[Workload] = []
    for path in iter_yaml_paths(paths):
        for doc in read_file(path).documents:
            w = as_workload(doc.data)
            if w is not None:
                workloads.append(w)
    names = [w.name for w in workloads]
    pods: list[EmulatedPod] = []
    for w in workloads:
        # Pod names are directory names: keep DNS-1123 characters, qualify by namespace on a clash.
        base = w.name if names.count(w.name) == 1 else f"{w.namespace}-{w.name}"
        pods.append(
            EmulatedPod(
                name=_UNSAFE.sub("-", base.lower()).strip(".-") or "pod",
                ref=w.ref,
                policy_hash=launch_policy_hash(w),
                role=ann.role(w.obj, w.template, w.ref),
                initializer=_has_initializer(w),
                mesh=_sidecar_env(w),
                ports=_ports(w),
            )
        )
    if len({p.name for p in pods}) != len(pods):
        raise RequestError("workload_invalid", "two confidential workloads map to the same pod name")
    return sorted(pods, key=lambda p: p.name)
