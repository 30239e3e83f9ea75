"""Annotation keys that ``generate`` reads and writes: the contract with the initializer and Kata."""

from __future__ import annotations

import json
from typing import Any

from contrast.errors import RequestError

SKIP_INITIALIZER = "contrast.edgeless.systems/skip-initializer"
POD_ROLE = "contrast.edgeless.systems/pod-role"
WORKLOAD_SECRET_ID = "contrast.edgeless.systems/workload-secret-id"  # noqa: S105 - a key name
# Hex SHA-256 of the initdata document: the pod's identity as SNP HOST_DATA / TDX MR_CONFIG_ID[0:32].
# The emulated initializer reads it from here; on real hardware the runtime derives it from INITDATA itself.
POLICY_HASH = "contrast.edgeless.systems/policy-hash"
# Kata's initdata annotation: base64(gzip(initdata TOML)).
KATA_INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
# The only commands the policy lets the host run in a container (kubectl exec, exec probes): a JSON object
# from container name to a list of exact argv lists, e.g. {"app": [["/bin/cat", "/tmp/ready"]]}.
EXEC_COMMANDS = "contrast.edgeless.systems/exec-commands"
# "true" lets the host read the containers' stdout and stderr (kubectl logs); by default kata-agent redacts
# them, because they leave the confidential VM in the clear.
ALLOW_LOGS = "contrast.edgeless.systems/allow-logs"

ROLE_COORDINATOR = "coordinator"
KNOWN_ROLES = frozenset({ROLE_COORDINATOR})


def _annotations(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        return {}
    ann = meta.get("annotations")
    return ann if isinstance(ann, dict) else {}


def read(obj: dict[str, Any], template: dict[str, Any], key: str, ref: str) -> str | None:
    """A Contrast annotation from the workload or its pod template; set in both and different is an error."""
    values = {_annotations(obj.get("metadata")).get(key), _annotations(template.get("metadata")).get(key)}
    values.discard(None)
    if len(values) > 1:
        raise RequestError("annotation_conflict", f"{ref}: {key} differs between workload and pod template")
    if not values:
        return None
    value = values.pop()
    if not isinstance(value, str):
        raise RequestError("annotation_invalid", f"{ref}: annotation {key} must be a string, got {value!r}")
    return value


def flag(obj: dict[str, Any], template: dict[str, Any], key: str, ref: str) -> bool:
    value = read(obj, template, key, ref)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise RequestError("annotation_invalid", f'{ref}: annotation {key} must be "true" or "false"')


def exec_commands(obj: dict[str, Any], template: dict[str, Any], ref: str) -> dict[str, list[list[str]]]:
    """The parsed :data:`EXEC_COMMANDS` annotation (empty when absent)."""
    value = read(obj, template, EXEC_COMMANDS, ref)
    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise RequestError("annotation_invalid", f"{ref}: {EXEC_COMMANDS} is not JSON") from exc
    if not isinstance(parsed, dict):
        raise RequestError(
            "annotation_invalid", f"{ref}: {EXEC_COMMANDS} must map container names to commands"
        )
    out: dict[str, list[list[str]]] = {}
    for name, commands in parsed.items():
        if not isinstance(commands, list) or not all(
            isinstance(c, list) and c and all(isinstance(a, str) for a in c) for c in commands
        ):
            raise RequestError(
                "annotation_invalid",
                f"{ref}: {EXEC_COMMANDS}[{name!r}] must be a list of non-empty argv lists",
            )
        out[name] = [list(c) for c in commands]
    return out


def role(obj: dict[str, Any], template: dict[str, Any], ref: str) -> str:
    value = read(obj, template, POD_ROLE, ref)
    if value is None or value == "":
        return ""
    if value not in KNOWN_ROLES:
        raise RequestError("annotation_invalid", f"{ref}: unknown {POD_ROLE} {value!r}")
    return value


def set_pod_annotation(template: dict[str, Any], key: str, value: str) -> None:
    meta = template.get("metadata")
    if meta is None:
        meta = template["metadata"] = {}
    if not isinstance(meta, dict):
        raise RequestError("workload_invalid", "pod template metadata is not a mapping")
    ann = meta.get("annotations")
    if ann is None:
        ann = meta["annotations"] = {}
    if not isinstance(ann, dict):
        raise RequestError("workload_invalid", "pod template annotations are not a mapping")
    ann[key] = value


def get_pod_annotation(template: dict[str, Any], key: str) -> Any:
    return _annotations(template.get("metadata")).get(key)
