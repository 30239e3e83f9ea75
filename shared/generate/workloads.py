"""Kubernetes workload kinds: where their pod template lives and how Contrast names them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contrast.errors import RequestError

RUNTIME_CLASS_PREFIX = "contrast-cc"

# kind -> path from the object to its pod template (``()`` is the Pod itself: metadata + spec).
_TEMPLATE_PATH: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
WORKLOAD_KINDS = frozenset(_TEMPLATE_PATH)


@dataclass(frozen=True)
class Workload:
    """A confidential workload found in a document. ``obj`` is the live, mutable document data."""

    obj: dict[str, Any]
    kind: str
    api_version: str
    name: str
    namespace: str
    template: dict[str, Any]  # the pod template (metadata + spec), mutable view into obj

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec = self.template.get("spec")
        if not isinstance(spec, dict):
            raise RequestError("workload_invalid", f"{self.ref}: pod template has no spec")
        return spec

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def default_secret_id(self) -> str:
        """``<group or core>/<version>/<Kind>/<namespace>/<name>``."""
        group, _, version = self.api_version.rpartition("/")
        return f"{group or 'core'}/{version}/{self.kind}/{self.namespace}/{self.name}"


def _dig(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur if isinstance(cur, dict) else None


def as_workload(data: Any) -> Workload | None:
    """The confidential workload in ``data``, or None if it is anything else (which then passes through)."""
    if not isinstance(data, dict):
        return None
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in WORKLOAD_KINDS:
        return None
    template = _dig(data, _TEMPLATE_PATH[kind])
    if template is None:
        return None
    spec = template.get("spec")
    if not isinstance(spec, dict):
        return None
    rc = spec.get("runtimeClassName")
    if not isinstance(rc, str) or not rc.startswith(RUNTIME_CLASS_PREFIX):
        return None
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise RequestError("workload_invalid", f"{kind} with runtimeClassName {rc!r} has no metadata.name")
    namespace = meta.get("namespace", "default")
    api_version = data.get("apiVersion")
    if not isinstance(namespace, str) or not isinstance(api_version, str) or not api_version:
        raise RequestError("workload_invalid", f"{kind} {meta['name']}: apiVersion/namespace must be strings")
    return Workload(
        obj=data,
        kind=kind,
        api_version=api_version,
        name=meta["name"],
        namespace=namespace,
        template=template,
    )
