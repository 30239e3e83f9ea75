"""Kubernetes workload kinds: where their pod template lives and how Contrast names them."""

from __future__ import annotations

import re
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

    def pod_names(self) -> PodNames:
        """The names the controller gives this workload's pods (the sandbox-name annotation)."""
        return pod_names(self.kind, self.name)

    def default_secret_id(self) -> str:
        """``<group or core>/<version>/<Kind>/<namespace>/<name>``."""
        group, _, version = self.api_version.rpartition("/")
        return f"{group or 'core'}/{version}/{self.kind}/{self.namespace}/{self.name}"


_META = frozenset("\\.+*?()|[]{}^$")


def regex_literal(text: str) -> str:
    """``text`` as a pattern that matches exactly it, in the syntax RE2 (OPA) and Rust (regorus) share.

    Only metacharacters are escaped, and control characters are written as hexadecimal escapes: both
    engines refuse some escapes that Python's ``re.escape`` writes.
    """
    out = []
    for ch in text:
        if ch in _META:
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{{{ord(ch):02x}}}")
        else:
            out.append(ch)
    return "".join(out)


# Generated pod names: <base>-<5 characters>, with <base> cut to 58 characters (Kubernetes'
# maxGeneratedNameLength); the random suffix and the pod-template hash use this alphabet.
_RAND = "[bcdfghjklmnpqrstvwxz2456789]"
_MAX_GENERATED_BASE = 58
MAX_HOSTNAME = 63
DNS_LABEL = "^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = "^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$"


@dataclass(frozen=True)
class PodNames:
    """The names a controller gives its pods, as an anchored regex, and their greatest length."""

    regex: str
    max_len: int

    def hostname_regex(self, spec_hostname: object) -> str:
        """The pod's host name: ``spec.hostname`` if set, else its name (kubelet cuts it to 63 chars)."""
        if isinstance(spec_hostname, str) and spec_hostname:
            return f"^{regex_literal(spec_hostname)}$"
        return self.regex if self.max_len <= MAX_HOSTNAME else DNS_LABEL


def _generated(base: str, structured: str, structured_len: int) -> PodNames:
    """``base`` + ``structured`` (a regex of at most ``structured_len`` chars) + "-" + 5 random chars."""
    if len(base) + structured_len + 1 <= _MAX_GENERATED_BASE:
        return PodNames(f"^{regex_literal(base)}{structured}-{_RAND}{{5}}$", len(base) + structured_len + 6)
    # The controller cuts the generated base: only a prefix of the workload name is certain.
    certain = base[:_MAX_GENERATED_BASE]
    rest = _MAX_GENERATED_BASE - len(certain)
    return PodNames(f"^{regex_literal(certain)}[-a-z0-9]{{0,{rest}}}{_RAND}{{5}}$", _MAX_GENERATED_BASE + 5)


def pod_names(kind: str, name: str) -> PodNames:
    """The pod names a controller of ``kind`` named ``name`` creates (Kubernetes' naming rules)."""
    if kind == "Pod":
        return PodNames(f"^{regex_literal(name)}$", len(name))
    if kind == "StatefulSet":
        return PodNames(f"^{regex_literal(name)}-(?:0|[1-9][0-9]{{0,8}})$", len(name) + 10)
    if kind == "Deployment":
        return _generated(name, f"-{_RAND}{{1,10}}", 11)
    if kind == "Job":
        return _generated(name, "(?:-(?:0|[1-9][0-9]{0,8}))?", 10)
    if kind == "CronJob":
        return _generated(name, "-(?:0|[1-9][0-9]{0,11})", 13)
    return _generated(name, "", 0)  # ReplicaSet, DaemonSet


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
    # The policy compares these with what the host reports and builds patterns from them: only the names
    # Kubernetes itself accepts, so that no name can widen a pattern.
    if not re.fullmatch(DNS_LABEL, namespace):
        raise RequestError(
            "workload_invalid", f"{kind} {meta['name']}: namespace {namespace!r} is not a DNS label"
        )
    if len(meta["name"]) > 253 or not re.fullmatch(DNS_SUBDOMAIN, meta["name"]):
        raise RequestError("workload_invalid", f"{kind} name {meta['name']!r} is not a DNS subdomain")
    hostname = spec.get("hostname")
    if hostname is not None and (not isinstance(hostname, str) or not re.fullmatch(DNS_LABEL, hostname)):
        raise RequestError(
            "workload_invalid", f"{kind} {meta['name']}: hostname {hostname!r} is not a DNS label"
        )
    return Workload(
        obj=data,
        kind=kind,
        api_version=api_version,
        name=meta["name"],
        namespace=namespace,
        template=template,
    )
