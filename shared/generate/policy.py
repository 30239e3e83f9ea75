"""The deterministic runtime policy of one pod: Kata agent Rego wrapped in an initdata TOML document.

The policy hash is SHA-256 of the initdata document's bytes. On hardware it becomes SNP ``HOST_DATA`` or TDX
``MR_CONFIG_ID[0:32]``; the manifest keys workloads by it. Everything here is a pure function of the pod spec
and the image configs, so the same inputs always give the same bytes and the same hash.

For every container, the policy data pins what the host would otherwise choose when it asks kata-agent to
start it: the image (by digest: annotation, guest-pull storage and root path), the exact argv with an
absolute argv[0], the exact environment (``PATH`` and the rest from the image config and the pod spec; a
value the host provides only where the pod spec asks for one, with the narrowest pattern), the working
directory, user and groups, capabilities, ``NoNewPrivileges``, the read-only root, every mount (destination,
type, source and options) and the storage behind it. The Rego in :mod:`contrast.generate.rules` checks
requests against this data; :mod:`contrast.generate.kata` holds the runtime defaults it assumes.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import posixpath
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contrast.errors import RequestError
from contrast.generate import inject, kata
from contrast.generate.imageconfig import ImageConfig
from contrast.generate.images import is_pinned, normalize
from contrast.generate.rules import RULES
from contrast.generate.workloads import DNS_LABEL, regex_literal

INITDATA_VERSION = "0.1.0"
POLICY_KEY = "policy.rego"

ImageLookup = Callable[[str], ImageConfig | None]

_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_NUMERIC = re.compile(r"^[0-9]+$")

# Patterns of values the host supplies at run time (RE2 and Rust regex syntax, unanchored pieces).
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_LABEL_VALUE = "(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
_ANY_TEXT = r"[^\x00]*"
_DNS_SUBDOMAIN = "[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"


def service_env_regex(service_links: bool) -> str:
    """One pattern for all of the kubelet's service variables of a container, joined by newlines.

    The ``kubernetes`` service of the default namespace is always there; with ``enableServiceLinks``
    (Kubernetes' default) every service of the pod's namespace is too, so any service name is allowed.
    Names follow the docker-link scheme, values are addresses, ports and protocols, nothing else.
    """
    ip = r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-fA-F:]{2,39})"
    port = "[0-9]{1,5}"
    url = rf"(?:tcp|udp|sctp)://(?:[0-9]{{1,3}}(?:\.[0-9]{{1,3}}){{3}}|\[[0-9a-fA-F:]{{2,39}}\]):{port}"
    svc = "[A-Z][A-Z0-9_]*" if service_links else "KUBERNETES"
    line = (
        f"{svc}_(?:SERVICE_HOST={ip}|SERVICE_PORT(?:_[A-Z0-9_]+)?={port}|PORT={url}"
        f"|PORT_{port}_(?:TCP|UDP|SCTP)(?:={url}|_PROTO=(?:tcp|udp|sctp)|_PORT={port}|_ADDR={ip}))"
    )
    return f"^(?:{line}(?:\\n|$))*$"


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
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            out = f.read(4 * 1024 * 1024 + 1)
    except (ValueError, OSError, EOFError) as exc:
        raise RequestError("initdata_invalid", "initdata annotation is not base64(gzip(...))") from exc
    if len(out) > 4 * 1024 * 1024:
        raise RequestError("initdata_invalid", "initdata annotation is larger than 4 MiB")
    return out


@dataclass(frozen=True)
class PodSettings:
    """What the pod's Contrast annotations and its controller decide beyond the pod spec."""

    pod_name_regex: str = DNS_LABEL  # the sandbox-name annotation (the pod's name)
    hostname_regex: str = DNS_LABEL  # CreateSandbox hostname, the sandbox's OCI hostname, HOSTNAME
    exec_commands: dict[str, list[list[str]]] = field(default_factory=dict)
    read_stream: bool = False
    # Variables the controller adds to every container (name -> value regex), e.g. an indexed Job's index.
    runtime_env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # the pod template's labels and annotations
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class _Ctx:
    ref: str
    namespace: str
    spec: dict[str, Any]
    settings: PodSettings
    images: ImageLookup
    allow_mutable_images: bool
    warnings: list[str] = field(default_factory=list)

    def fail(self, what: str, code: str = "workload_invalid") -> RequestError:
        return RequestError(code, f"{self.ref}: {what}")


def _str_list(value: Any, what: str, ctx: _Ctx) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ctx.fail(f"{what} must be a list of strings")
    return list(value)


def _opt_int(value: Any, what: str, ctx: _Ctx, *, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= 2**32 - 2:
        raise ctx.fail(f"{what} must be an integer in [{minimum}, 2^32-2]")
    return value


def expand_vars(text: str, env: dict[str, str | None], what: str, ctx: _Ctx) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` escapes, unknown names stay literal.

    A reference to a host-provided value (``valueFrom``) would make the result host-controlled: refused.
    """

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        if name not in env:
            return m.group(0)
        value = env[name]
        if value is None:
            raise ctx.fail(f"{what} references $({name}), whose value the host provides")
        return value

    return _VAR_REF.sub(sub, text)


# ---- Environment


def _value_from(item: dict[str, Any], cname: str, ctx: _Ctx) -> tuple[str | None, str | None]:
    """(pinned value, host value regex) of a ``valueFrom`` entry: one of the two is None."""
    source = item["valueFrom"]
    name = item["name"]
    if not isinstance(source, dict) or len(source) != 1:
        raise ctx.fail(f"container {cname!r} env {name}: valueFrom must name exactly one source")
    ((kind, ref),) = source.items()
    if not isinstance(ref, dict):
        raise ctx.fail(f"container {cname!r} env {name}: malformed valueFrom")
    if kind == "fieldRef":
        path = ref.get("fieldPath")
        if path == "metadata.namespace":
            return ctx.namespace, None
        if path == "spec.serviceAccountName":
            sa = ctx.spec.get("serviceAccountName") or ctx.spec.get("serviceAccount") or "default"
            return str(sa), None
        if path == "metadata.name":
            # Exactly one anchor off each end: strip("^$") would also eat an escaped "\$" of the name.
            return None, ctx.settings.pod_name_regex.removeprefix("^").removesuffix("$")
        if path == "metadata.uid":
            return None, _UUID
        if path == "spec.nodeName":
            return None, _DNS_SUBDOMAIN
        if path in ("status.podIP", "status.hostIP"):
            return None, "ip"  # checked by the rules' ip_ok
        if path in ("status.podIPs", "status.hostIPs"):
            return None, "ips"
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path or "")
        if m:
            known = (ctx.settings.labels if m[1] == "labels" else ctx.settings.annotations).get(m[2])
            if known is not None:
                return None, regex_literal(known)
            if m[1] == "labels":
                return None, _LABEL_VALUE
            ctx.warnings.append(
                f"{ctx.ref}: container {cname!r} env {name} comes from an annotation the host sets at will"
            )
            return None, _ANY_TEXT
        raise ctx.fail(f"container {cname!r} env {name}: unsupported fieldRef {path!r}")
    if kind == "resourceFieldRef":
        return None, "[0-9]+"
    if kind in ("configMapKeyRef", "secretKeyRef"):
        ctx.warnings.append(
            f"{ctx.ref}: container {cname!r} env {name} comes from a {kind[:-6]}: the host chooses its value"
        )
        return None, _ANY_TEXT
    raise ctx.fail(f"container {cname!r} env {name}: unsupported valueFrom {kind!r}")


@dataclass
class _Env:
    pinned: dict[str, str]  # name -> exact value
    host: dict[str, dict[str, str]]  # name -> {"kind": "ip" | "ips"} or {"kind": "regex", "regex": ...}
    resolved: dict[str, str | None]  # for $(VAR) expansion: None for host-provided values


def _environment(c: dict[str, Any], cname: str, image: ImageConfig | None, ctx: _Ctx) -> _Env:
    if c.get("envFrom"):
        raise ctx.fail(f"container {cname!r} uses envFrom, whose names cannot be pinned; list them in env")
    pinned: dict[str, str] = {}
    for entry in image.env if image else ():
        name, _, value = entry.partition("=")
        pinned[name] = value
    pinned.pop("HOSTNAME", None)  # containerd sets the pod's host name over the image's
    pinned.setdefault("PATH", kata.DEFAULT_PATH)
    host: dict[str, dict[str, str]] = {"HOSTNAME": {"kind": "regex", "regex": ctx.settings.hostname_regex}}
    host.update({k: {"kind": "regex", "regex": v} for k, v in ctx.settings.runtime_env.items()})
    resolved: dict[str, str | None] = {}
    raw = c.get("env") or []
    if not isinstance(raw, list):
        raise ctx.fail(f"container {cname!r} env must be a list")
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ctx.fail(f"container {cname!r} has an env entry without a name")
        name = item["name"]
        if "=" in name or "\x00" in name or not _ENV_NAME.match(name):
            raise ctx.fail(f"env name {name!r} is not valid")
        pinned.pop(name, None)
        host.pop(name, None)
        if "valueFrom" in item:
            if name in kata.CODE_ENV or name.startswith(kata.CODE_ENV_PREFIX):
                raise ctx.fail(
                    f"container {cname!r} takes {name} from valueFrom: the host would choose which programs, "
                    "libraries or modules run; set its value in the pod spec"
                )
            exact, pattern = _value_from(item, cname, ctx)
            if exact is not None:
                pinned[name] = resolved[name] = exact
            else:
                assert pattern is not None
                host[name] = (
                    {"kind": pattern}
                    if pattern in ("ip", "ips")
                    else {"kind": "regex", "regex": f"^{pattern}$"}
                )
                resolved[name] = None
            continue
        value = item.get("value", "")
        if not isinstance(value, str):
            raise ctx.fail(f"env {name} value must be a string")
        value = expand_vars(value, resolved, f"env {name}", ctx)
        if "\x00" in value:
            raise ctx.fail(f"env {name} contains NUL")
        pinned[name] = resolved[name] = value
    if c.get("tty") is True:
        pinned["TERM"] = "xterm"
        host.pop("TERM", None)
    return _Env(pinned=pinned, host=host, resolved=resolved)


# ---- Process


def _argv(c: dict[str, Any], cname: str, image: ImageConfig | None, env: _Env, ctx: _Ctx) -> list[str]:
    command = _str_list(c.get("command"), f"container {cname!r} command", ctx)
    args = _str_list(c.get("args"), f"container {cname!r} args", ctx)
    # Kubernetes: command replaces the image entrypoint and drops its cmd; args replace the cmd.
    expand = [
        expand_vars(a, env.resolved, f"container {cname!r} argv", ctx)
        for a in [*(command or []), *(args or [])]
    ]
    if command:
        words = expand
    elif args is not None:
        words = [*(image.entrypoint if image else ()), *expand]
    else:
        # The image's own entrypoint and cmd, which the kubelet does not expand.
        words = [*(image.entrypoint if image else ()), *(image.cmd if image else ())]
    if not words:
        raise ctx.fail(f"container {cname!r} has no command (neither the pod spec nor the image sets one)")
    if not words[0].startswith("/"):
        raise ctx.fail(
            f"container {cname!r} starts {words[0]!r}, a relative path that kata-agent resolves on PATH; "
            "set an absolute command (for example /usr/local/bin/python)",
            "command_not_absolute",
        )
    return words


def _security_context(c: dict[str, Any], cname: str, ctx: _Ctx) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = ctx.spec.get("securityContext") or {}
    own = c.get("securityContext") or {}
    if not isinstance(pod, dict) or not isinstance(own, dict):
        raise ctx.fail(f"container {cname!r}: securityContext must be a mapping")
    if own.get("privileged"):
        raise ctx.fail(f"container {cname!r} is privileged: it could reach every device of the guest")
    if own.get("procMount") not in (None, "Default"):
        raise ctx.fail(f"container {cname!r}: procMount {own.get('procMount')!r} unmasks /proc")
    for sc in (pod, own):
        if sc.get("seLinuxOptions"):
            raise ctx.fail(f"container {cname!r}: seLinuxOptions are not supported in the guest")
        profile = sc.get("appArmorProfile") or {}
        if isinstance(profile, dict) and profile.get("type") == "Localhost":
            raise ctx.fail(f"container {cname!r}: a Localhost AppArmor profile is not available in the guest")
        seccomp = sc.get("seccompProfile") or {}
        if isinstance(seccomp, dict) and seccomp.get("type") == "Localhost":
            raise ctx.fail(f"container {cname!r}: a Localhost seccomp profile is not available in the guest")
    return pod, own


def _effective(sc: dict[str, Any], pod_sc: dict[str, Any], key: str) -> Any:
    """A container's security setting, else the pod's: Kubernetes reads an explicit null as not set."""
    value = sc.get(key)
    return pod_sc.get(key) if value is None else value


def _user(
    image: ImageConfig | None, pod_sc: dict[str, Any], sc: dict[str, Any], cname: str, ctx: _Ctx
) -> dict[str, Any]:
    """containerd's UID, GID and groups: runAsUser/runAsGroup over the image's numeric USER, else root.

    With a guest-pulled image the host has no /etc/passwd or /etc/group to look names up in, so a named
    image user needs runAsUser (and a non-root group runAsGroup), as in Kata's genpolicy.
    """
    config_user = image.user if image else ""
    run_as_user = _opt_int(_effective(sc, pod_sc, "runAsUser"), "runAsUser", ctx)
    run_as_group = _opt_int(_effective(sc, pod_sc, "runAsGroup"), "runAsGroup", ctx)
    if run_as_user is not None:
        uid, gid = run_as_user, run_as_group if run_as_group is not None else 0
    else:
        user, _, group = config_user.partition(":")
        if (user and not _NUMERIC.match(user)) or (group and not _NUMERIC.match(group)):
            raise ctx.fail(
                f"container {cname!r}: the image runs as user {config_user!r}, which cannot be "
                "resolved without the image's /etc/passwd; set securityContext.runAsUser and runAsGroup",
                "user_not_numeric",
            )
        if run_as_group is not None:
            raise ctx.fail(f"container {cname!r}: runAsGroup needs runAsUser (containerd refuses it alone)")
        uid, gid = int(user or 0), int(group or 0)
    if _effective(sc, pod_sc, "runAsNonRoot") is True and uid == 0:
        raise ctx.fail(f"container {cname!r}: runAsNonRoot is set but the container runs as root")
    groups = {gid}
    for g in pod_sc.get("supplementalGroups") or []:
        groups.add(_opt_int(g, "supplementalGroups", ctx) or 0)
    fs_group = _opt_int(pod_sc.get("fsGroup"), "fsGroup", ctx)
    if fs_group is not None:
        groups.add(fs_group)
    return {"uid": uid, "gid": gid, "additional_gids": sorted(groups)}


def _capabilities(sc: dict[str, Any], cname: str, ctx: _Ctx) -> list[str]:
    caps = dict.fromkeys(kata.DEFAULT_CAPS)
    spec = sc.get("capabilities") or {}
    if not isinstance(spec, dict):
        raise ctx.fail(f"container {cname!r}: capabilities must be a mapping")
    drop = _str_list(spec.get("drop"), "capabilities.drop", ctx) or []
    add = _str_list(spec.get("add"), "capabilities.add", ctx) or []
    for name in drop:
        if name == "ALL":
            caps.clear()
        else:
            caps.pop(name.removeprefix("CAP_"), None)
    for name in add:
        cap = name.removeprefix("CAP_")
        if cap not in kata.ALL_CAPS:
            raise ctx.fail(f"container {cname!r}: unknown capability {name!r} (ALL is not allowed in add)")
        caps[cap] = None
    return sorted(caps)


# ---- Mounts and volumes


def _shared(
    destination: str, name: str, options: list[str], *, directory: bool, optional: bool = False
) -> dict[str, Any]:
    """A mount of a file or directory the host copies into the guest (CopyFileRequest)."""
    return {
        "destination": destination,
        "directory": directory,
        "kind": "shared",
        "name": name,
        "optional": optional,
        "options": options,
        "type": "bind",
    }


def _fixed(
    destination: str, fs_type: str, source: str, options: tuple[str, ...], extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "destination": destination,
        "extra_options": list(extra),
        "kind": "fixed",
        "optional": False,
        "options": list(options),
        "source": source,
        "type": fs_type,
    }


def _basename(path: str, what: str, ctx: _Ctx) -> str:
    name = posixpath.basename(posixpath.normpath(path))
    if not path.startswith("/") or name in ("", ".", "..", "/"):
        raise ctx.fail(f"{what} {path!r} must be an absolute path with a file name")
    return name


def _volume_mounts(
    c: dict[str, Any], cname: str, volumes: dict[str, dict[str, Any]], fs_group: int | None, ctx: _Ctx
) -> list[dict[str, Any]]:
    raw = c.get("volumeMounts") or []
    if not isinstance(raw, list):
        raise ctx.fail(f"container {cname!r} volumeMounts must be a list")
    out = []
    for m in raw:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("name"), str)
            or not isinstance(m.get("mountPath"), str)
        ):
            raise ctx.fail(f"container {cname!r} has a malformed volumeMount")
        vname, dest = m["name"], posixpath.normpath(m["mountPath"])
        vol = volumes.get(vname)
        if vol is None:
            raise ctx.fail(f"container {cname!r} mounts unknown volume {vname!r}")
        if m.get("subPath") or m.get("subPathExpr"):
            raise ctx.fail(
                f"container {cname!r}: volumeMount {vname!r} uses subPath, which Kata does not support"
            )
        if m.get("mountPropagation") not in (None, "None"):
            raise ctx.fail(
                f"container {cname!r}: volumeMount {vname!r} propagates mounts to or from the host"
            )
        read_only = m.get("readOnly", False)
        if not isinstance(read_only, bool):
            raise ctx.fail(f"volumeMount {vname!r} readOnly must be a boolean")
        access = "ro" if read_only else "rw"
        options = ["rbind", "rprivate", access]
        if "emptyDir" in vol:
            change_policy = (ctx.spec.get("securityContext") or {}).get("fsGroupChangePolicy") or "Always"
            if change_policy not in ("Always", "OnRootMismatch"):
                raise ctx.fail(f"fsGroupChangePolicy {change_policy!r} is not valid")
            empty_dir = vol["emptyDir"] or {}
            medium = empty_dir.get("medium", "") if isinstance(empty_dir, dict) else None
            if medium not in ("", "Memory"):
                raise ctx.fail(f"volume {vname!r}: emptyDir medium {medium!r} is not supported")
            # The runtime passes the fsGroup that the kubelet gave the volume's directory as fsgid=.
            fsgid = [f"fsgid={fs_group}"] if fs_group else []
            entry = {
                "destination": dest,
                "kind": "ephemeral" if medium == "Memory" else "emptydir",
                "name": vname,
                "optional": False,
                "options": options,
                "type": "bind",
            }
            if medium == "Memory":
                entry["storage_options"] = fsgid
            else:
                entry["local_options"] = ["mode=0777", *fsgid]
                entry["fs_group"] = {"id": fs_group, "change_policy": change_policy} if fs_group else None
            out.append(entry)
        elif any(k in vol for k in ("configMap", "secret", "projected", "downwardAPI")):
            # The kubelet mounts these read-only whatever the volumeMount says.
            out.append(
                _shared(dest, _basename(dest, "mountPath", ctx), ["rbind", "rprivate", "ro"], directory=True)
            )
        elif "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"] or {}
            if isinstance(claim, dict) and claim.get("readOnly"):
                options[-1] = "ro"
            ctx.warnings.append(
                f"{ctx.ref}: container {cname!r} mounts claim {vname!r}: its content comes from the host"
            )
            out.append(_shared(dest, _basename(dest, "mountPath", ctx), options, directory=True))
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise ctx.fail(f"volume {vname!r} of type {kinds} is not supported in a confidential pod")
    return out


def _mounts(
    c: dict[str, Any],
    cname: str,
    volumes: dict[str, dict[str, Any]],
    image: ImageConfig | None,
    read_only_root: bool,
    fs_group: int | None,
    ctx: _Ctx,
) -> tuple[list[dict[str, Any]], str]:
    termination = c.get("terminationMessagePath", kata.DEFAULT_TERMINATION_PATH)
    if not isinstance(termination, str):
        raise ctx.fail(f"container {cname!r}: terminationMessagePath must be a string")
    termination = posixpath.normpath(termination)
    mounts = [_fixed(d, t, s, o) for d, t, s, o in kata.KERNEL_MOUNTS]
    mounts.append(_fixed(*kata.CGROUP_MOUNT, extra=kata.CGROUP_EXTRA_OPTIONS))
    mounts.append(_fixed("/dev/shm", "bind", kata.SANDBOX_SHM, ("rbind",)))  # noqa: S108 - a guest path
    rw, ro = ["rbind", "rprivate", "rw"], ["rbind", "rprivate", "ro"]
    root = ["rbind", "rprivate", "ro" if read_only_root else "rw"]
    log = _basename(termination, "terminationMessagePath", ctx)
    mounts.append(_shared("/etc/hosts", "hosts", rw, directory=False))
    mounts.append(_shared("/etc/hostname", "hostname", root, directory=False))
    mounts.append(_shared("/etc/resolv.conf", "resolv.conf", root, directory=False))
    mounts.append(_shared(termination, log, rw, directory=False))
    if ctx.spec.get("automountServiceAccountToken") is not False:
        # Mounted unless the service account disables it, which the pod spec cannot show: optional.
        mounts.append(_shared(kata.SA_TOKEN_PATH, "serviceaccount", ro, directory=True, optional=True))
    mounts += _volume_mounts(c, cname, volumes, fs_group, ctx)
    counts = Counter(m["destination"] for m in mounts)
    twice = sorted(d for d, n in counts.items() if n > 1)
    if twice:
        raise ctx.fail(f"container {cname!r} mounts {twice} twice (or over a mount the runtime makes)")
    taken = set(counts)
    for volume in image.volumes if image else ():
        dest = posixpath.normpath(volume.replace("//", "/"))
        if dest not in taken:
            # containerd backs an image VOLUME that the pod does not mount with a host directory.
            name = _basename(dest, "image volume", ctx)
            mounts.append(_shared(dest, name, rw, directory=True, optional=True))
            taken.add(dest)
            ctx.warnings.append(
                f"{ctx.ref}: container {cname!r}: the image declares VOLUME {dest}, which the pod does not "
                "mount: its content comes from the host (mount an emptyDir there to keep it in the guest)"
            )
    return sorted(mounts, key=lambda m: m["destination"]), termination


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _code_paths(container: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(path, how code is taken from it, what it is) for every place outside the image code comes from.

    ``file``: a program or library, taken from that very path. ``search``: a directory searched by name
    (PATH, LD_LIBRARY_PATH; a relative or empty entry is the working directory). ``modules``: a directory
    Python imports from, where a file is a module and a directory a package. ``tree``: the dynamic loader's
    configuration and library directories, with everything below them.
    """
    env, cwd = container["env"], container["cwd"]

    def resolved(entry: str) -> str:
        return posixpath.normpath(posixpath.join(cwd, entry))

    out = [(container["args"][0], "file", "its program")]
    out += [(cmd[0], "file", "an exec command") for cmd in container["exec"]]
    out += [(resolved(e), "search", "a directory on its PATH") for e in env.get("PATH", "").split(":")]
    if "LD_LIBRARY_PATH" in env:
        out += [
            (resolved(e), "search", "a directory on its LD_LIBRARY_PATH")
            for e in env["LD_LIBRARY_PATH"].split(":")
        ]
    out += [
        (resolved(e), "file", "in its LD_PRELOAD") for e in re.split(r"[: ]", env.get("LD_PRELOAD", "")) if e
    ]
    out += [(path, "tree", "where the dynamic loader looks") for path in kata.LOADER_PATHS]
    out += _python_paths(container, resolved)
    return out


_PYTHON = re.compile(r"python[0-9.]*")
# Interpreter options that take the next argument as their value.
_PYTHON_VALUE_OPTIONS = frozenset({"-W", "-X", "--check-hash-based-pycs"})


def _python_paths(container: dict[str, Any], resolved: Callable[[str], str]) -> list[tuple[str, str, str]]:
    """Where a Python interpreter imports modules from before its own library: the first entry of
    ``sys.path`` (the working directory, or a script's own directory) and ``PYTHONPATH``; ``PYTHONHOME`` and
    ``PYTHONUSERBASE`` hold its library and site-packages, whose ``.pth`` files run at start.

    The working directory counts for every interpreter, whatever its options (``-I`` or ``-P`` would drop
    it, ``-m`` or ``-c`` may be combined with other flags): an extra refusal is cheaper than a misread option.
    """
    args, env = container["args"], container["env"]
    if not _PYTHON.fullmatch(posixpath.basename(args[0])):
        return []
    firsts = [resolved("")]
    rest = iter(args[1:])
    for arg in rest:
        if arg in _PYTHON_VALUE_OPTIONS:
            next(rest, None)
        elif not arg.startswith("-"):
            firsts.append(posixpath.dirname(resolved(arg)))  # a script: its own directory
            break
        elif arg[:2] in ("-m", "-c") or arg == "-":
            break
    out = [(first, "modules", "where its Python interpreter imports modules first") for first in firsts]
    if "PYTHONPATH" in env:
        out += [
            (resolved(e), "modules", "a directory on its PYTHONPATH") for e in env["PYTHONPATH"].split(":")
        ]
    out += [
        (resolved(e), "tree", f"in its {name}")
        for name in ("PYTHONHOME", "PYTHONUSERBASE")
        for e in env.get(name, "").split(":")
        if e
    ]
    return out


def _takes_code_from(path: str, how: str, mount: dict[str, Any]) -> bool:
    dest = str(mount["destination"])
    if _under(path, dest):
        return True  # the path lies in (or is) the host's copy
    if how == "search":
        return not mount["directory"] and posixpath.dirname(dest) == path  # a host file found by name
    if how == "modules":
        return posixpath.dirname(dest) == path  # a module (file) or a package (directory) found by name
    return how == "tree" and _under(dest, path)


def _host_code_check(container: dict[str, Any], ctx: _Ctx) -> None:
    """Refuse a container that would load code from a file or directory whose content the host supplies.

    Such mounts are the host's copies: volumes from ConfigMaps, Secrets, the downward API, claims and image
    VOLUMEs, and the files /etc/hosts, /etc/hostname, /etc/resolv.conf and the termination log. The host
    writes them at will, so none may hold a program, lie on a path searched for programs or libraries, or
    cover the dynamic loader's files.
    """
    shared = [m for m in container["mounts"].values() if m["kind"] == "shared"]
    for path, how, what in _code_paths(container):
        for mount in shared:
            if _takes_code_from(path, how, mount):
                raise ctx.fail(
                    f"container {container['name']!r}: {mount['destination']} is a mount whose content the "
                    f"host supplies, and {path} is {what}; put the code into the image, or mount the volume "
                    "elsewhere",
                    "host_code",
                )


def _secrets_check(container: dict[str, Any], ctx: _Ctx) -> None:
    """Refuse a host-supplied mount inside the initializer's secrets directory.

    kata-agent mounts it over the guest-memory volume there, so this container would read the host's files
    where the initializer writes its key, certificates and workload secret.
    """
    secrets = container["mounts"].get(inject.SECRETS_MOUNT_PATH)
    if secrets is None or secrets.get("name") != inject.SECRETS_VOLUME:
        return
    for dest, m in container["mounts"].items():
        if m["kind"] == "shared" and _under(dest, inject.SECRETS_MOUNT_PATH):
            raise ctx.fail(
                f"container {container['name']!r} mounts {dest}, whose content the host supplies, inside "
                f"{inject.SECRETS_MOUNT_PATH}, where the initializer writes the workload's keys and secrets"
            )


def _fully_specified(c: dict[str, Any]) -> bool:
    env = c.get("env") or []
    has_path = any(isinstance(e, dict) and e.get("name") == "PATH" and "value" in e for e in env)
    return bool(c.get("command")) and has_path and bool(c.get("workingDir"))


def _container(c: Any, volumes: dict[str, dict[str, Any]], *, init: bool, ctx: _Ctx) -> dict[str, Any]:
    if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
        raise ctx.fail("a container has no name")
    cname: str = c["name"]
    image = c.get("image")
    if not isinstance(image, str) or not image:
        raise ctx.fail(f"container {cname!r} has no image")
    if not is_pinned(image):
        if not ctx.allow_mutable_images:
            raise ctx.fail(
                f"container {cname!r} image {image!r} is not pinned by digest (name@sha256:...); "
                "pin it, or pass --allow-mutable-images to accept that the registry decides what runs",
                "image_not_pinned",
            )
        ctx.warnings.append(
            f"{ctx.ref}: container {cname!r} runs MUTABLE image {image!r}: the registry decides what runs"
        )
    if c.get("volumeDevices"):
        raise ctx.fail(f"container {cname!r}: volumeDevices give the container a host block device")
    ref = normalize(image)
    config = ctx.images(ref)
    env = _environment(c, cname, config, ctx)
    if config is None and not _fully_specified(c):
        raise ctx.fail(
            f"container {cname!r}: no image config for {ref} (not in the lock file, any --image-layout, "
            "or a reachable registry). The policy pins the argv, environment and working directory the "
            "config provides; make the config available, or set command, an env PATH and workingDir in "
            "the pod spec",
            "image_config_missing",
        )
    pod_sc, sc = _security_context(c, cname, ctx)
    argv = _argv(c, cname, config, env, ctx)
    cwd = c.get("workingDir") or (config.working_dir if config else "") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise ctx.fail(f"container {cname!r}: workingDir must be an absolute path")
    read_only_root = sc.get("readOnlyRootFilesystem") is True
    fs_group = _opt_int(pod_sc.get("fsGroup"), "fsGroup", ctx)
    mounts, termination = _mounts(c, cname, volumes, config, read_only_root, fs_group, ctx)
    allow_escalation = sc.get("allowPrivilegeEscalation")
    commands = ctx.settings.exec_commands.get(cname, [])
    for cmd in commands:
        if not cmd[0].startswith("/"):
            raise ctx.fail(f"exec command {cmd!r} for {cname!r} must start with an absolute path")
    if not commands:
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if isinstance(c.get(probe), dict) and "exec" in c[probe]:
                ctx.warnings.append(
                    f"{ctx.ref}: container {cname!r} has an exec {probe}, which the policy denies unless "
                    "the exec-commands annotation lists it"
                )
    container = {
        "args": argv,
        "capabilities": _capabilities(sc, cname, ctx),
        "cwd": cwd,
        "env": dict(sorted(env.pinned.items())),
        "exec": commands,
        "host_env": dict(sorted(env.host.items())),
        "image": ref,
        "init": init,
        "mounts": {m["destination"]: m for m in mounts},  # by destination: the rules look mounts up
        "name": cname,
        "no_new_privileges": allow_escalation is False,
        "read_only_root": read_only_root,
        "termination_path": termination,
        "terminal": c.get("tty") is True,
        "user": _user(config, pod_sc, sc, cname, ctx),
    }
    _host_code_check(container, ctx)
    _secrets_check(container, ctx)
    return container


def _copy_file_names(containers: list[dict[str, Any]], ctx: _Ctx) -> dict[str, list[str]]:
    """Base names the host may copy into the shared directory: files, and directories with their content."""
    files = set(kata.HOST_FILES)
    directories: set[str] = set()
    for c in containers:
        for m in c["mounts"].values():
            if m["kind"] == "shared":
                (directories if m["directory"] else files).add(m["name"])
    clash = files & directories
    if clash:
        raise ctx.fail(
            f"{sorted(clash)} name both a file and a directory that the host copies in; the policy could not "
            "tell them apart (rename the mount path)"
        )
    return {"directories": sorted(directories), "files": sorted(files)}


def _sandbox_mounts() -> list[dict[str, Any]]:
    mounts = [_fixed(d, t, s, o) for d, t, s, o in kata.KERNEL_MOUNTS]
    mounts.append(_fixed("/dev/shm", "bind", kata.SANDBOX_SHM, ("rbind",)))  # noqa: S108 - a guest path
    mounts.append(
        _shared("/etc/resolv.conf", "resolv.conf", list(kata.SANDBOX_RESOLV_OPTIONS), directory=False)
    )
    return sorted(mounts, key=lambda m: m["destination"])


def _sysctls(ctx: _Ctx) -> dict[str, str]:
    pod_sc = ctx.spec.get("securityContext") or {}
    out: dict[str, str] = {}
    for s in pod_sc.get("sysctls") or [] if isinstance(pod_sc, dict) else []:
        if (
            not isinstance(s, dict)
            or not isinstance(s.get("name"), str)
            or not isinstance(s.get("value"), str | int)
        ):
            raise ctx.fail("securityContext.sysctls entries need a name and a value")
        out[s["name"]] = str(s["value"])
    return dict(sorted(out.items()))


def build(
    spec: dict[str, Any],
    *,
    namespace: str,
    ref: str,
    settings: PodSettings | None = None,
    images: ImageLookup = lambda _: None,
    allow_mutable_images: bool = False,
) -> Policy:
    """The pod's policy: its pod-specific ``policy_data`` after the rules, in an initdata document."""
    ctx = _Ctx(
        ref=ref,
        namespace=namespace,
        spec=spec,
        settings=settings or PodSettings(),
        images=images,
        allow_mutable_images=allow_mutable_images,
    )
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            raise ctx.fail(f"{key} shares a host namespace with a confidential pod")
    if spec.get("hostUsers") is False:
        raise ctx.fail("hostUsers: false (a user namespace) is not supported by kata-agent")
    if spec.get("ephemeralContainers"):
        raise ctx.fail("ephemeral containers cannot be part of a pinned policy")
    volumes: dict[str, dict[str, Any]] = {}
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict) or not isinstance(v.get("name"), str):
            raise ctx.fail("malformed volume")
        volumes[v["name"]] = v
    containers: list[dict[str, Any]] = []
    for key, init in (("initContainers", True), ("containers", False)):
        raw = spec.get(key) or []
        if not isinstance(raw, list):
            raise ctx.fail(f"spec.{key} must be a list")
        for c in raw:
            entry = _container(c, volumes, init=init, ctx=ctx)
            if any(x["name"] == entry["name"] for x in containers):
                raise ctx.fail(f"two containers are named {entry['name']!r}")
            containers.append(entry)
    if not any(not c["init"] for c in containers):
        raise ctx.fail("pod has no containers")
    unknown = set(ctx.settings.exec_commands) - {c["name"] for c in containers}
    if unknown:
        raise ctx.fail(f"exec-commands names containers the pod does not have: {sorted(unknown)}")
    data = {
        "containers": containers,  # pod order: init containers first, as the kubelet starts them
        "copy_file": _copy_file_names(containers, ctx),
        "namespace": namespace,
        "read_stream": ctx.settings.read_stream,
        "runtime": {
            "apparmor_profiles": list(kata.APPARMOR_PROFILES),
            "masked_paths": list(kata.MASKED_PATHS),
            "readonly_paths": list(kata.READONLY_PATHS),
            "sandbox_storages": [dict(s) for s in kata.SANDBOX_STORAGES],
            "sysctls": dict(kata.RUNTIME_SYSCTLS),
        },
        "sandbox": {
            "hostname": ctx.settings.hostname_regex,
            "mounts": {m["destination"]: m for m in _sandbox_mounts()},
            "name": ctx.settings.pod_name_regex,
            "pidns": spec.get("shareProcessNamespace") is True,
            "sysctls": _sysctls(ctx),
        },
        "service_env": service_env_regex(spec.get("enableServiceLinks", True) is not False),
    }
    return Policy(initdata=initdata_toml(rego(data)), data=data, warnings=tuple(ctx.warnings))


def rego(data: dict[str, Any]) -> str:
    # ensure_ascii makes every string a plain-ASCII JSON literal, which is also a valid Rego string literal.
    body = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True)
    return f"{RULES}\npolicy_data := {body}\n"


def _toml_string(s: str) -> str:
    """A TOML string for ``s``: a readable multi-line literal when that is exact, else a fully escaped one."""
    if "'''" not in s and all(ch in "\n\t" or (" " <= ch <= "~") for ch in s) and not s.endswith("'"):
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
