"""The deterministic runtime policy of one pod: Kata agent Rego wrapped in an initdata TOML document.

The policy hash is SHA-256 of the initdata document's bytes. On hardware it becomes SNP ``HOST_DATA`` or TDX
``MR_CONFIG_ID[0:32]``; the manifest keys workloads by it. Everything here is a pure function of the pod spec,
so the same YAML always gives the same bytes and the same hash.

What the policy pins for every container: its name, its image reference (digest-pinned), its full
argv (``command`` + ``args`` after Kubernetes' ``$(VAR)`` expansion), its working directory if set, its
environment (exact ``NAME=value`` pairs; values from ``valueFrom`` are host-provided, so only the name is
pinned and generate warns), and its mounts (destination, read-only flag, and where the source may come from:
the guest-private ephemeral directory for in-memory emptyDirs, the host-shared directory for everything else).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from contrast.errors import RequestError
from contrast.generate.images import is_pinned, normalize
from contrast.generate.rules import RULES

INITDATA_VERSION = "0.1.0"
POLICY_KEY = "policy.rego"

# Where kata-agent mounts volumes inside the guest (the OCI mount `source` the host asks for).
_EPHEMERAL = "^/run/kata-containers/sandbox/ephemeral/{name}$"
# One file name below the host-shared directory; never "." or "..".
_SHARED = "^/run/kata-containers/shared/containers/[0-9a-zA-Z_-][0-9a-zA-Z_.-]*$"
_SANDBOX_ARGS = ["/pause"]
_SA_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path
_DEFAULT_TERMINATION_PATH = "/dev/termination-log"

# Kernel file systems and runtime-provided files every container gets (destination -> allowed source).
_KERNEL_MOUNTS: tuple[tuple[str, str], ...] = (
    ("/proc", "^proc$"),
    ("/dev", "^tmpfs$"),
    ("/dev/pts", "^devpts$"),
    ("/dev/mqueue", "^mqueue$"),
    ("/sys", "^sysfs$"),
    ("/sys/fs/cgroup", "^cgroup$"),
    ("/dev/shm", "^/run/kata-containers/sandbox/shm$"),  # noqa: S108 - guest path, not a temp file
    ("/etc/hosts", _SHARED),
    ("/etc/hostname", _SHARED),
    ("/etc/resolv.conf", _SHARED),
)

# Environment the runtime adds. PATH comes from the digest-pinned image config, HOSTNAME from the pod name,
# and the KUBERNETES_* variables are always injected by the kubelet.
_RUNTIME_ENV = (
    r"^PATH=[^\x00]*$",
    r"^HOSTNAME=[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    r"^KUBERNETES_(SERVICE_HOST|SERVICE_PORT|SERVICE_PORT_HTTPS|PORT|PORT_443_TCP|PORT_443_TCP_PROTO"
    r"|PORT_443_TCP_PORT|PORT_443_TCP_ADDR)=[^\x00]*$",
)
# Docker-link style variables for every Service in the namespace, present unless enableServiceLinks is false.
_SERVICE_LINK_ENV = (
    r"^[A-Z_][A-Z0-9_]*_(SERVICE_HOST|SERVICE_PORT|SERVICE_PORT_[A-Z0-9_]+|PORT"
    r"|PORT_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)=[^\x00]*$"
)

_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


@dataclass(frozen=True)
class Policy:
    """One pod's initdata document and the values derived from it."""

    initdata: bytes  # the TOML document
    data: dict[str, Any]  # the policy_data embedded in the Rego
    warnings: tuple[str, ...] = ()

    @property
    def hash_hex(self) -> str:
        return hashlib.sha256(self.initdata).hexdigest()

    @property
    def annotation(self) -> str:
        """base64(gzip(initdata)), as Kata reads it from ``io.katacontainers.config.hypervisor.cc_init_data``.

        mtime=0 and no file name make the gzip bytes depend on the content only.
        """
        return base64.b64encode(gzip.compress(self.initdata, compresslevel=9, mtime=0)).decode("ascii")


def decode_annotation(value: str) -> bytes:
    """Inverse of :attr:`Policy.annotation` (bounded: initdata is small, a gzip bomb is refused)."""
    try:
        raw = base64.b64decode(value, validate=True)
        with gzip.GzipFile(fileobj=__import__("io").BytesIO(raw)) as f:
            out = f.read(4 * 1024 * 1024 + 1)
    except (ValueError, OSError, EOFError) as exc:
        raise RequestError("initdata_invalid", "initdata annotation is not base64(gzip(...))") from exc
    if len(out) > 4 * 1024 * 1024:
        raise RequestError("initdata_invalid", "initdata annotation is larger than 4 MiB")
    return out


@dataclass
class _Ctx:
    ref: str
    allow_mutable_images: bool
    warnings: list[str] = field(default_factory=list)


def _str_list(value: Any, what: str, ctx: _Ctx) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError("workload_invalid", f"{ctx.ref}: {what} must be a list of strings")
    return list(value)


def expand_vars(text: str, env: dict[str, str | None], what: str, ctx: _Ctx) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` escapes, unknown names stay literal.

    A reference to a host-provided value (``valueFrom``) would make the argv host-controlled: refused.
    """

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        if name not in env:
            return m.group(0)
        value = env[name]
        if value is None:
            raise RequestError(
                "workload_invalid", f"{ctx.ref}: {what} references $({name}), whose value the host provides"
            )
        return value

    return _VAR_REF.sub(sub, text)


def _env(
    container: dict[str, Any], cname: str, ctx: _Ctx
) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    if container.get("envFrom"):
        raise RequestError(
            "workload_invalid",
            f"{ctx.ref}: container {cname!r} uses envFrom, whose names cannot be pinned; list them in env",
        )
    raw = container.get("env") or []
    if not isinstance(raw, list):
        raise RequestError("workload_invalid", f"{ctx.ref}: container {cname!r} env must be a list")
    resolved: dict[str, str | None] = {}
    out: dict[str, dict[str, Any]] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise RequestError(
                "workload_invalid", f"{ctx.ref}: container {cname!r} has an env entry without a name"
            )
        name = item["name"]
        if "=" in name or "\x00" in name:
            raise RequestError("workload_invalid", f"{ctx.ref}: env name {name!r} is not valid")
        if "valueFrom" in item:
            ctx.warnings.append(
                f"{ctx.ref}: container {cname!r} env {name} comes from valueFrom: the host chooses its value"
            )
            resolved[name] = None
            out[name] = {"host_provided": True, "name": name, "value": ""}
            continue
        value = item.get("value", "")
        if not isinstance(value, str):
            raise RequestError("workload_invalid", f"{ctx.ref}: env {name} value must be a string")
        value = expand_vars(value, resolved, f"env {name}", ctx)
        if "\x00" in value:
            raise RequestError("workload_invalid", f"{ctx.ref}: env {name} contains NUL")
        resolved[name] = value
        out[name] = {
            "host_provided": False,
            "name": name,
            "value": value,
        }  # later entries override, as in k8s
    return list(out.values()), resolved


def _mounts(
    container: dict[str, Any], volumes: dict[str, dict[str, Any]], cname: str, ctx: _Ctx
) -> list[Any]:
    raw = container.get("volumeMounts") or []
    if not isinstance(raw, list):
        raise RequestError("workload_invalid", f"{ctx.ref}: container {cname!r} volumeMounts must be a list")
    out: list[dict[str, Any]] = []
    for m in raw:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("name"), str)
            or not isinstance(m.get("mountPath"), str)
        ):
            raise RequestError(
                "workload_invalid", f"{ctx.ref}: container {cname!r} has a malformed volumeMount"
            )
        vol = volumes.get(m["name"])
        if vol is None:
            raise RequestError(
                "workload_invalid", f"{ctx.ref}: container {cname!r} mounts unknown volume {m['name']!r}"
            )
        read_only = m.get("readOnly", False)
        if not isinstance(read_only, bool):
            raise RequestError(
                "workload_invalid", f"{ctx.ref}: volumeMount {m['name']!r} readOnly must be a boolean"
            )
        empty_dir = vol.get("emptyDir")
        private = isinstance(empty_dir, dict) and empty_dir.get("medium") == "Memory"
        out.append(
            {
                "destination": m["mountPath"],
                "host_shared": not private,
                "read_only": read_only,
                "source_regex": _EPHEMERAL.format(name=re.escape(m["name"])) if private else _SHARED,
            }
        )
    out.sort(key=lambda x: x["destination"])
    return out


def _container(
    c: Any, volumes: dict[str, dict[str, Any]], *, init: bool, ctx: _Ctx
) -> tuple[dict[str, Any], str]:
    if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
        raise RequestError("workload_invalid", f"{ctx.ref}: a container has no name")
    cname: str = c["name"]
    image = c.get("image")
    if not isinstance(image, str) or not image:
        raise RequestError("workload_invalid", f"{ctx.ref}: container {cname!r} has no image")
    if not is_pinned(image):
        if not ctx.allow_mutable_images:
            raise RequestError(
                "image_not_pinned",
                f"{ctx.ref}: container {cname!r} image {image!r} is not pinned by digest (name@sha256:...); "
                "pin it, or pass --allow-mutable-images to accept that the registry decides what runs",
            )
        ctx.warnings.append(
            f"{ctx.ref}: container {cname!r} runs MUTABLE image {image!r}: the registry decides what runs"
        )
    command = _str_list(c.get("command"), f"container {cname!r} command", ctx)
    if not command:
        # The entrypoint would come from the image config, which generate cannot read offline; the policy
        # would have to allow any argv. Make it explicit instead.
        raise RequestError(
            "command_missing",
            f"{ctx.ref}: container {cname!r} sets no command; the policy pins argv, so set it explicitly",
        )
    args = _str_list(c.get("args"), f"container {cname!r} args", ctx)
    env, resolved = _env(c, cname, ctx)
    argv = [expand_vars(a, resolved, f"container {cname!r} argv", ctx) for a in [*command, *args]]
    cwd = c.get("workingDir", "")
    if not isinstance(cwd, str):
        raise RequestError("workload_invalid", f"{ctx.ref}: container {cname!r} workingDir must be a string")
    termination = c.get("terminationMessagePath", _DEFAULT_TERMINATION_PATH)
    if not isinstance(termination, str):
        raise RequestError("workload_invalid", f"{ctx.ref}: terminationMessagePath must be a string")
    return (
        {
            "args": argv,
            "cwd": cwd,
            "env": sorted(env, key=lambda e: e["name"]),
            "image": normalize(image),
            "init": init,
            "mounts": _mounts(c, volumes, cname, ctx),
            "name": cname,
        },
        termination,
    )


def policy_data(
    spec: dict[str, Any], *, namespace: str, ref: str, allow_mutable_images: bool
) -> tuple[dict[str, Any], list[str]]:
    """The pod-specific part of the policy, as plain JSON-able data."""
    ctx = _Ctx(ref=ref, allow_mutable_images=allow_mutable_images)
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            raise RequestError(
                "workload_invalid", f"{ref}: {key} shares a host namespace with a confidential pod"
            )
    if spec.get("ephemeralContainers"):
        raise RequestError(
            "workload_invalid", f"{ref}: ephemeral containers cannot be part of a pinned policy"
        )
    volumes: dict[str, dict[str, Any]] = {}
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict) or not isinstance(v.get("name"), str):
            raise RequestError("workload_invalid", f"{ref}: malformed volume")
        volumes[v["name"]] = v
    containers: list[dict[str, Any]] = []
    terminations: set[str] = set()
    names: set[str] = set()
    for key, init in (("initContainers", True), ("containers", False)):
        raw = spec.get(key) or []
        if not isinstance(raw, list):
            raise RequestError("workload_invalid", f"{ref}: spec.{key} must be a list")
        for c in raw:
            entry, termination = _container(c, volumes, init=init, ctx=ctx)
            if entry["name"] in names:
                raise RequestError("workload_invalid", f"{ref}: two containers are named {entry['name']!r}")
            names.add(entry["name"])
            containers.append(entry)
            terminations.add(termination)
    if not any(not c["init"] for c in containers):
        raise RequestError("workload_invalid", f"{ref}: pod has no containers")
    service_links = spec.get("enableServiceLinks", True) is not False
    sa_token = spec.get("automountServiceAccountToken", True) is not False
    default_mounts = [{"destination": d, "source_regex": s} for d, s in _KERNEL_MOUNTS]
    default_mounts += [{"destination": t, "source_regex": _SHARED} for t in sorted(terminations)]
    if sa_token:
        default_mounts.append({"destination": _SA_TOKEN_PATH, "source_regex": _SHARED})
    runtime_env = list(_RUNTIME_ENV) + ([_SERVICE_LINK_ENV] if service_links else [])
    data = {
        "containers": containers,  # pod order: init containers first, as the kubelet starts them
        "copy_file_regex": _SHARED,
        "default_mounts": sorted(default_mounts, key=lambda m: m["destination"]),
        "namespace": namespace,
        "runtime_env_regex": runtime_env,
        "sandbox": {"args": _SANDBOX_ARGS},
        "service_account_token": sa_token,
        "service_links": service_links,
    }
    return data, ctx.warnings


def rego(data: dict[str, Any]) -> str:
    # ensure_ascii makes every string a plain-ASCII JSON literal, which is also a valid Rego string literal.
    body = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True)
    return f"{RULES}\npolicy_data := {body}\n"


def _toml_string(s: str) -> str:
    """A TOML string for ``s``: a readable multi-line literal when that is exact, else a fully escaped one."""
    if "'''" not in s and all(ch == "\n" or (" " <= ch <= "~") for ch in s) and not s.endswith("'"):
        # A newline right after the opening ''' is trimmed by TOML, so start with one on purpose.
        return "'''\n" + s + "'''"
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def initdata_toml(rego_text: str) -> bytes:
    doc = (
        f'version = "{INITDATA_VERSION}"\n'
        'algorithm = "sha256"\n'
        "\n"
        "[data]\n"
        f'"{POLICY_KEY}" = {_toml_string(rego_text)}\n'
    )
    return doc.encode("utf-8")


def build(spec: dict[str, Any], *, namespace: str, ref: str, allow_mutable_images: bool = False) -> Policy:
    data, warnings = policy_data(
        spec, namespace=namespace, ref=ref, allow_mutable_images=allow_mutable_images
    )
    return Policy(initdata=initdata_toml(rego(data)), data=data, warnings=tuple(warnings))
