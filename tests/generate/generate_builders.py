"""Builders for Kubernetes objects used by the generate tests (imported as a module, not a conftest)."""

from __future__ import annotations

import hashlib
from typing import Any


def digest_image(name: str) -> str:
    return f"registry.example/{name}@sha256:{hashlib.sha256(name.encode()).hexdigest()}"


def pod_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "runtimeClassName": "contrast-cc",
        "containers": [
            {
                "name": "app",
                "image": digest_image("app"),
                "command": ["/bin/app"],
                "args": ["--port", "8080"],
                # Fully specified (absolute command, PATH, workingDir): a policy needs no image config.
                "workingDir": "/",
                "env": [{"name": "PATH", "value": "/usr/bin:/bin"}, {"name": "MODE", "value": "prod"}],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache", "readOnly": True}],
            }
        ],
        "volumes": [{"name": "cache", "emptyDir": {}}],
    }
    spec.update(overrides)
    return spec


def deployment(name: str = "web", namespace: str = "shop", **spec_overrides: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(**spec_overrides)},
        },
    }


def coordinator(role: str = "manifest", name: str = "") -> dict[str, Any]:
    """A Coordinator Deployment that runs the ``role`` service (manifest, verifier or ca), as deploy/ does."""
    d = deployment(name or {"manifest": "coordinator"}.get(role, role), namespace="contrast-system")
    d["metadata"]["annotations"] = {"contrast.edgeless.systems/pod-role": "coordinator"}
    container = d["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["/opt/contrast/bin/python", "-m", f"contrast.{role}"]
    container["args"] = []
    return d
