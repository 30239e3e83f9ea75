"""Inject the Contrast initializer and the in-memory ``contrast-secrets`` volume into a pod spec, and write
the Coordinator pins (:mod:`contrast.coordinator.pins`) into the containers that need them.

Idempotent: running it on its own output changes nothing, so ``generate`` can run again on files it wrote.
"""

from __future__ import annotations

from typing import Any, Final

from contrast.coordinator.pins import POLICY_HASHES_ENV, ROOT_ENV, TDX_STATUSES_ENV
from contrast.errors import RequestError

INITIALIZER_NAME = "contrast-initializer"
SECRETS_VOLUME = "contrast-secrets"
SECRETS_MOUNT_PATH = "/contrast"
NATS_URL_ENV = "CONTRAST_NATS_URL"
# Which Coordinator the initializer (or a joining Coordinator replica) trusts: the policy hashes per role, the
# root CA, the TDX statuses for peers. They are part of the pod spec and so of the measured policy: the bus
# cannot point an attested pod at another "Coordinator" (docs/protocol.md §1).
COORDINATOR_HASHES_ENV = POLICY_HASHES_ENV
PIN_ENVS: Final = (POLICY_HASHES_ENV, ROOT_ENV, TDX_STATUSES_ENV)
DEFAULT_NATS_URL = "nats://nats.contrast-system.svc.cluster.local:4222"

# How the service image (deploy/Dockerfile) starts a service: its interpreter by absolute path (never looked
# up on PATH), its PATH, working directory and unprivileged user. The pod spec states all of them, so the
# policy pins them even where generate cannot read the image config.
SERVICE_PYTHON = "/opt/contrast/bin/python"
SERVICE_PATH = "/opt/contrast/bin:/usr/local/bin:/usr/bin:/bin"
SERVICE_WORKDIR = "/tmp"  # noqa: S108 - the image's WORKDIR, a path inside the container
SERVICE_UID = 10001


def service_command(module: str) -> list[str]:
    return [SERVICE_PYTHON, "-m", module]


def initializer_container(image: str, nats_url: str, pins: dict[str, str]) -> dict[str, Any]:
    """The initializer; ``pins`` are the values of :data:`PIN_ENVS` to set (an absent name is not set)."""
    return {
        "name": INITIALIZER_NAME,
        "image": image,
        "command": service_command("contrast.initializer"),
        "workingDir": SERVICE_WORKDIR,
        "env": [
            {"name": "PATH", "value": SERVICE_PATH},
            {"name": NATS_URL_ENV, "value": nats_url},
            *({"name": n, "value": pins[n]} for n in PIN_ENVS if n in pins),
        ],
        "securityContext": {"runAsUser": SERVICE_UID, "runAsGroup": SERVICE_UID},
        "volumeMounts": [{"name": SECRETS_VOLUME, "mountPath": SECRETS_MOUNT_PATH}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
    }


def secrets_volume() -> dict[str, Any]:
    # medium: Memory keeps the keys and the workload secret in the CVM's encrypted RAM, never on a host disk.
    return {"name": SECRETS_VOLUME, "emptyDir": {"medium": "Memory"}}


def _list(spec: dict[str, Any], key: str, ref: str) -> list[Any]:
    value = spec.get(key)
    if value is None:
        value = spec[key] = []
    if not isinstance(value, list):
        raise RequestError("workload_invalid", f"{ref}: spec.{key} must be a list")
    return value


def set_pins(container: dict[str, Any], pins: dict[str, str], ref: str) -> None:
    """Make the container's :data:`PIN_ENVS` exactly ``pins`` (set, replaced or removed); other variables stay
    where they are."""
    env = container.get("env")
    if env is None:
        env = container["env"] = []
    if not isinstance(env, list) or not all(isinstance(e, dict) for e in env):
        raise RequestError(
            "workload_invalid", f"{ref}: container {container.get('name')!r} env must be a list"
        )
    if any(e.get("name") in PIN_ENVS and "value" not in e for e in env):
        raise RequestError(
            "workload_invalid", f"{ref}: the Coordinator pins must be plain values, never valueFrom"
        )
    kept = [e for e in env if e.get("name") not in PIN_ENVS or e.get("name") in pins]
    for e in kept:
        if e.get("name") in pins:
            e["value"] = pins[e["name"]]
    have = {e.get("name") for e in kept}
    kept += [{"name": n, "value": pins[n]} for n in PIN_ENVS if n in pins and n not in have]
    env[:] = kept


def container_env(container: Any, name: str) -> str | None:
    """A plain ``value`` of the container's environment, or None."""
    if not isinstance(container, dict) or not isinstance(container.get("env"), list):
        return None
    for e in container["env"]:
        if isinstance(e, dict) and e.get("name") == name and isinstance(e.get("value"), str):
            return str(e["value"])
    return None


def inject(spec: dict[str, Any], *, image: str, nats_url: str, pins: dict[str, str], ref: str) -> None:
    """Make the initializer the first init container and mount ``contrast-secrets`` in every container."""
    init = _list(spec, "initContainers", ref)
    init[:] = [c for c in init if not (isinstance(c, dict) and c.get("name") == INITIALIZER_NAME)]
    init.insert(0, initializer_container(image, nats_url, pins))

    volumes = _list(spec, "volumes", ref)
    existing = [v for v in volumes if isinstance(v, dict) and v.get("name") == SECRETS_VOLUME]
    if existing and existing[0] != secrets_volume():
        # A user volume of the same name could point at host storage: refuse rather than write secrets there.
        raise RequestError(
            "workload_invalid", f"{ref}: volume {SECRETS_VOLUME!r} exists and is not an in-memory emptyDir"
        )
    if not existing:
        volumes.append(secrets_volume())

    for key in ("initContainers", "containers"):
        for c in _list(spec, key, ref):
            if not isinstance(c, dict):
                raise RequestError("workload_invalid", f"{ref}: spec.{key} holds a non-mapping")
            mounts = c.get("volumeMounts")
            if mounts is None:
                mounts = c["volumeMounts"] = []
            if not isinstance(mounts, list):
                raise RequestError(
                    "workload_invalid", f"{ref}: container {c.get('name')!r} volumeMounts must be a list"
                )
            ours = [m for m in mounts if isinstance(m, dict) and m.get("name") == SECRETS_VOLUME]
            if ours and any(m.get("mountPath") != SECRETS_MOUNT_PATH for m in ours):
                raise RequestError(
                    "workload_invalid",
                    f"{ref}: container {c.get('name')!r} mounts {SECRETS_VOLUME} elsewhere",
                )
            if not ours:
                mounts.append({"name": SECRETS_VOLUME, "mountPath": SECRETS_MOUNT_PATH})
