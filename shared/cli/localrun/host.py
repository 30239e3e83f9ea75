"""The emulated Kubernetes host: which confidential pods a deployment has, each pod's launch policy hash, and
how its Contrast containers start.

A real Kata host hashes the pod's initdata annotation and launches the CVM with that hash as SNP HOST_DATA
(TDX MR_CONFIG_ID). The emulated host does the same from the generated YAML, and refuses a pod whose
``policy-hash`` annotation disagrees with its initdata: the hash must come from the document, never from a
label next to it.

It starts a Coordinator pod's service container and a workload's initializer with the command and the
environment the YAML gives (:class:`Launch`), so the per-role pins that ``generate`` wrote are the ones the
processes run with. Only what names a place on this machine instead of the cluster is the host's own
(:data:`HOST_SETTINGS`: addresses, ports, paths, the NATS user and password the deployment hands the pod,
the JetStream replica count), and the service image's interpreter is this machine's.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from contrast.errors import RequestError
from contrast.generate import annotations as ann
from contrast.generate.coordinators import service_container
from contrast.generate.inject import INITIALIZER_NAME, SERVICE_PYTHON
from contrast.generate.mesh import SIDECAR_NAME
from contrast.generate.policy import decode_annotation
from contrast.generate.workloads import Workload, as_workload
from contrast.generate.yamldocs import iter_yaml_paths, read_file

_UNSAFE = re.compile(r"[^a-z0-9.-]")
# Settings that say where things are in the cluster, and the emulated hardware; the emulated host sets its
# own. Nothing a pod trusts (its Coordinator pins, its service's configuration) is among them.
HOST_SETTINGS: Final = frozenset(
    {
        "CONTRAST_PLATFORM",
        "CONTRAST_EMULATOR_DIR",
        "CONTRAST_EMULATED_POLICY_HASH",
        "PATH",
        "CONTRAST_NATS_URL",
        "CONTRAST_NATS_USER",
        "CONTRAST_NATS_PASSWORD",
        "CONTRAST_REPLICA",
        "CONTRAST_METRICS_PORT",
        "CONTRAST_METRICS_ADDR",
        "CONTRAST_JS_REPLICAS",
        "CONTRAST_SOURCES",  # the NATS users of this host's initializers
        "CONTRAST_INITIALIZER_ROOT",
        "CONTRAST_INITIALIZER_DEADLINE",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    }
)


@dataclass(frozen=True)
class Launch:
    """A container as the YAML starts it: command and arguments, and the plain values of its environment."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, container: dict[str, Any], ref: str) -> Launch:
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        env = container.get("env") or []
        if not argv or not all(isinstance(a, str) for a in argv) or not isinstance(env, list):
            raise RequestError(
                "workload_invalid", f"{ref}: container {container.get('name')!r} has no command"
            )
        # valueFrom needs the Kubernetes API, which the emulated host does not have: such a variable is unset.
        plain = tuple(
            (str(e["name"]), str(e["value"]))
            for e in env
            if isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("value"), str)
        )
        return cls(argv=tuple(argv), env=plain)

    def command(self) -> list[str]:
        """The argv on this machine: the service image's interpreter is this process's interpreter."""
        if self.argv[0] != SERVICE_PYTHON:
            raise RequestError(
                "workload_invalid", f"the emulated host runs only the service image's {SERVICE_PYTHON}"
            )
        return [sys.executable, *self.argv[1:]]

    def environment(self, base: Mapping[str, str], host: Mapping[str, str]) -> dict[str, str]:
        """``base`` (this machine's environment), then the YAML's, then the ``host`` settings."""
        unknown = set(host) - HOST_SETTINGS
        if unknown:
            raise ValueError(f"the emulated host does not own {sorted(unknown)}")
        env = dict(base)
        env.update((k, v) for k, v in self.env if k not in HOST_SETTINGS)
        env.update(host)
        return env


@dataclass(frozen=True)
class EmulatedPod:
    """One confidential pod as the host launches it."""

    name: str  # directory name under .run/pods/
    ref: str  # "Deployment emojishop/api"
    namespace: str  # its initializer connects as this namespace's NATS user
    policy_hash: bytes  # SHA-256 of the initdata document: the pod's HOST_DATA / MR_CONFIG_ID[0:32]
    role: str  # "" or "coordinator"
    initializer: bool  # the Contrast initializer is the first init container
    mesh: dict[str, str] | None = None  # the mesh sidecar's environment; None: the pod has no sidecar
    ports: tuple[int, ...] = ()  # TCP ports the pod's application containers declare
    coordinator_role: str = ""  # manifest, verifier or ca: the service a Coordinator pod runs
    launch: Launch | None = None  # the Coordinator service container, or the workload's initializer

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


def _initializer(w: Workload) -> dict[str, Any] | None:
    init = w.pod_spec.get("initContainers")
    if (
        init
        and isinstance(init, list)
        and isinstance(init[0], dict)
        and init[0].get("name") == INITIALIZER_NAME
    ):
        return init[0]
    return None


def _pod(w: Workload, name: str) -> EmulatedPod:
    role = ann.role(w.obj, w.template, w.ref)
    init = _initializer(w)
    coordinator_role, launch = "", None
    if role == ann.ROLE_COORDINATOR:
        service, container = service_container(w)
        coordinator_role, launch = service.value, Launch.of(container, w.ref)
    elif init is not None:
        launch = Launch.of(init, w.ref)
    return EmulatedPod(
        name=name,
        ref=w.ref,
        namespace=w.namespace,
        policy_hash=launch_policy_hash(w),
        role=role,
        initializer=init is not None,
        coordinator_role=coordinator_role,
        launch=launch,
        mesh=_sidecar_env(w),
        ports=_ports(w),
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


def _workloads(paths: list[Path]) -> list[Workload]:
    workloads: list[Workload] = []
    for path in iter_yaml_paths(paths):
        for doc in read_file(path).documents:
            w = as_workload(doc.data)
            if w is not None:
                workloads.append(w)
    return workloads


def namespaces(paths: list[Path]) -> list[str]:
    """The namespaces of the workloads under ``paths`` (generated or not), sorted: each gets a NATS user."""
    return sorted({w.namespace for w in _workloads(paths)})


def discover_pods(paths: list[Path]) -> list[EmulatedPod]:
    """Every confidential workload in the YAML under ``paths``, one emulated pod each, sorted by name."""
    workloads = _workloads(paths)
    names = [w.name for w in workloads]
    pods: list[EmulatedPod] = []
    for w in workloads:
        # Pod names are directory names: keep DNS-1123 characters, qualify by namespace on a clash.
        base = w.name if names.count(w.name) == 1 else f"{w.namespace}-{w.name}"
        pods.append(_pod(w, _UNSAFE.sub("-", base.lower()).strip(".-") or "pod"))
    if len({p.name for p in pods}) != len(pods):
        raise RequestError("workload_invalid", "two confidential workloads map to the same pod name")
    return sorted(pods, key=lambda p: p.name)
