"""Service-mesh injection for ``contrast generate``: annotations in, a pinned sidecar container out.

A pod with any of Contrast's service-mesh annotations (``servicemesh-ingress``, ``servicemesh-egress``,
``servicemesh-admin-interface-port``; see :mod:`contrast.mesh.config`) gets the ``contrast-service-mesh``
sidecar: an init container with ``restartPolicy: Always`` after the initializer, running
``python -m contrast.meshproxy`` from the service image (its interpreter by absolute path, its PATH and
working directory stated, as the initializer's), with the annotations' values as its environment. The
sidecar is injected before the runtime policy is built, so the policy pins it like any container (image,
argv, environment, user, capabilities, mounts): the mesh configuration is part of the pod's attested
identity. The annotations themselves are read only here.

Refused: an empty egress annotation (a sidecar that would do nothing), a value outside the grammar, and a mesh
on a pod without the initializer (the Coordinator, or ``skip-initializer``), which would have no credentials.

On a guest that closes every pod until its mesh is ready (Contrast's default-deny boot unit; ``generate
--guest-default-deny``), a pod without the sidecar, the Coordinator's included, would stay closed: it gets
the ``contrast-open`` init container instead, which only removes the rule. The privilege it needs stays in
that short-lived container, not in the initializer or the Coordinator's services.
"""

from __future__ import annotations

from typing import Any, Final

from contrast.errors import RequestError
from contrast.generate import annotations as ann
from contrast.generate.inject import SERVICE_PATH, SERVICE_WORKDIR, service_command
from contrast.generate.workloads import Workload
from contrast.mesh import config as mc

SIDECAR_NAME: Final = "contrast-service-mesh"
OPENER_NAME: Final = "contrast-open"
# Root with NET_ADMIN: netfilter rules (and, for the sidecar, IP_TRANSPARENT on the ingress listeners).
_NET_ADMIN: Final = {
    "runAsUser": 0,
    "runAsGroup": 0,
    "runAsNonRoot": False,
    "capabilities": {"add": ["NET_ADMIN"]},
}
ADMIN_PORT_NAME: Final = "contrast-admin"
_ANNOTATION_ENV: Final = (
    (mc.INGRESS_ANNOTATION, mc.INGRESS_ENV),
    (mc.EGRESS_ANNOTATION, mc.EGRESS_ENV),
    (mc.ADMIN_PORT_ANNOTATION, mc.ADMIN_PORT_ENV),
    (mc.EGRESS_VERIFY_SAN_ANNOTATION, mc.EGRESS_VERIFY_SAN_ENV),
)
_OPT_IN: Final = (mc.INGRESS_ANNOTATION, mc.EGRESS_ANNOTATION, mc.ADMIN_PORT_ANNOTATION)


def mesh_annotations(w: Workload) -> dict[str, str]:
    """The pod's service-mesh annotations that are set (an empty value counts as set)."""
    out = {}
    for key, _ in _ANNOTATION_ENV:
        value = ann.read(w.obj, w.template, key, w.ref)
        if value is not None:
            out[key] = value
    return out


def wanted(w: Workload) -> bool:
    """Whether the pod opts into the mesh (as Contrast: any ingress, egress or admin-port annotation)."""
    found = mesh_annotations(w)
    return any(key in found for key in _OPT_IN)


def sidecar_container(image: str, values: dict[str, str]) -> dict[str, Any]:
    """The sidecar for validated annotation ``values``: only set, non-empty values become environment."""
    env = [{"name": var, "value": values[key]} for key, var in _ANNOTATION_ENV if values.get(key)]
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": image,
        "command": service_command("contrast.meshproxy"),
        "workingDir": SERVICE_WORKDIR,
        "env": [{"name": "PATH", "value": SERVICE_PATH}, *env],
        "restartPolicy": "Always",
        "securityContext": dict(_NET_ADMIN),
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
    }
    admin = values.get(mc.ADMIN_PORT_ANNOTATION)
    if admin:
        container["ports"] = [{"name": ADMIN_PORT_NAME, "containerPort": int(admin)}]
    return container


def inject(w: Workload, *, image: str, with_initializer: bool, guest_default_deny: bool = False) -> bool:
    """Add (or replace) the sidecar if the pod opts in; returns whether it did. Idempotent.

    ``guest_default_deny``: a pod that does not opt in gets the opener instead (see the module docstring).
    """
    if not wanted(w):
        if guest_default_deny:
            _replace(_init_containers(w), OPENER_NAME, opener_container(image))
        return False
    values = mesh_annotations(w)
    if not with_initializer:
        raise RequestError(
            "annotation_invalid",
            f"{w.ref}: a service mesh needs the initializer's credentials, and this pod has no initializer",
        )
    if values.get(mc.EGRESS_ANNOTATION) == "":
        raise RequestError("annotation_invalid", f"{w.ref}: {mc.EGRESS_ANNOTATION} must not be empty")
    try:
        mc.parse(
            values.get(mc.INGRESS_ANNOTATION),
            values.get(mc.EGRESS_ANNOTATION),
            values.get(mc.ADMIN_PORT_ANNOTATION),
            values.get(mc.EGRESS_VERIFY_SAN_ANNOTATION),
        )
    except mc.MeshConfigError as e:
        raise RequestError("annotation_invalid", f"{w.ref}: service mesh: {e}") from e
    _replace(_init_containers(w), SIDECAR_NAME, sidecar_container(image, values))
    return True


def opener_container(image: str) -> dict[str, Any]:
    return {
        "name": OPENER_NAME,
        "image": image,
        "command": [*service_command("contrast.meshproxy"), "default-deny", "remove"],
        "workingDir": SERVICE_WORKDIR,
        "env": [{"name": "PATH", "value": SERVICE_PATH}],
        "securityContext": dict(_NET_ADMIN),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
    }


def _init_containers(w: Workload) -> list[Any]:
    spec = w.pod_spec
    init = spec.get("initContainers")
    if init is None:
        init = spec["initContainers"] = []
    if not isinstance(init, list):
        raise RequestError("workload_invalid", f"{w.ref}: spec.initContainers must be a list")
    return init


def _replace(init: list[Any], name: str, container: dict[str, Any]) -> None:
    init[:] = [c for c in init if not (isinstance(c, dict) and c.get("name") == name)]
    init.append(container)
