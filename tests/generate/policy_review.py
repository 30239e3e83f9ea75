"""Attacks found in the adversarial review of the runtime policy, with the legitimate requests next to them.

Each function returns the cases of one finding for one subject: requests a malicious host could send that
an earlier version of the rules allowed, and the legitimate requests next to them that must stay allowed.
They run on regorus and OPA with the rest of the suite.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from contrast.generate import inject
from tests.generate.kata_requests import copy_request
from tests.generate.policy_engines import Case
from tests.generate.policy_suite import (
    INTERFACE,
    NEIGHBOUR,
    ROUTE,
    Subject,
    container_names,
    mount,
    mutated,
)

BLOCK_DIR = "/run/kata-containers/sandbox/storage"


def loopback_cases(s: Subject) -> list[Case]:
    """kata-agent parses addresses; the policy compared strings. Other spellings named the loopback device.

    UpdateInterfaceRequest finds its link by hardware address, read number by number ("0:0:0:0:0:0" is the
    loopback's 00:00:00:00:00:00); routes and neighbours are parsed with prefixes and embedded IPv4.
    """
    iface, route, neigh = INTERFACE, ROUTE, NEIGHBOUR
    rows: list[tuple[str, str, dict[str, Any], bool]] = [
        ("UpdateInterfaceRequest", "upper-case hardware address", {"hwAddr": "66:74:9F:6A:96:01"}, True),
    ]
    rows += [
        ("UpdateInterfaceRequest", f"loopback as {hw}", {"hwAddr": hw}, False)
        for hw in ("0:0:0:0:0:0", "00:00:00:00:00:0", "+0:0:0:0:0:0", "000:00:00:00:00:00", "00:00:00:00:00")
    ]
    out = [
        Case(f"{s.key}/{rule}/{label}", s.key, rule, {"interface": {**iface, **change}}, ok)
        for rule, label, change, ok in rows
    ]
    sources = [
        ("10.244.1.17", True),
        ("fd00:10:244:1::17", True),
        ("::1/128", False),
        ("::0.0.0.1", False),
        ("0:0:0:0:0:0:0.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("127.0.0.1/8", False),
        ("0:0::0:1", False),
    ]
    out += [
        Case(
            f"{s.key}/UpdateRoutesRequest/source {src}",
            s.key,
            "UpdateRoutesRequest",
            {"routes": {"Routes": [{**route, "source": src}]}},
            ok,
        )
        for src, ok in sources
    ]
    neighbours = [("10.244.1.1", True), ("::1", False), ("::ffff:127.0.0.1", False), ("127.0.0.1/32", False)]
    out += [
        Case(
            f"{s.key}/AddARPNeighborsRequest/address {address}",
            s.key,
            "AddARPNeighborsRequest",
            {
                "neighbors": {
                    "ARPNeighbors": [{**neigh, "toIPAddress": {**neigh["toIPAddress"], "address": address}}]
                }
            },
            ok,
        )
        for address, ok in neighbours
    ]
    return out


def _move_after(req: dict[str, Any], destination: str, after: str) -> None:
    mounts = req["OCI"]["Mounts"]
    moving = mount(req, destination)
    mounts.remove(moving)
    mounts.insert(mounts.index(mount(req, after)) + 1, moving)


def _nested_pairs(req: dict[str, Any]) -> list[tuple[str, str]]:
    """(parent, child) destinations of the request's mounts."""
    dests = [m["destination"] for m in req["OCI"]["Mounts"]]
    return [(p, c) for p in dests for c in dests if c.startswith(p + "/")]


def mount_order_cases(s: Subject) -> list[Case]:
    """kata-agent mounts in the order given: a parent listed after its child hides the child.

    On the rich pod the host lays the ConfigMap directory it supplies (/etc/app) over the guest-private
    volume below it (/etc/app/keys), so the app reads the host's keys; on every pod /dev over /dev/shm.
    """
    pod = s.pod
    out = []
    state = pod.state_with()
    requests = [("sandbox", pod.sandbox_container(), {})]
    requests += [(n, pod.container(n), state) for n in container_names(s)]
    for name, req, st in requests:
        for parent, child in _nested_pairs(req):
            attack = mutated(copy.deepcopy(req), lambda r, p=parent, c=child: _move_after(r, p, c))
            out.append(
                Case(
                    f"{s.key}/order/{name}: {parent} after {child}",
                    s.key,
                    "CreateContainerRequest",
                    attack,
                    False,
                    st,
                )
            )
    assert out
    return out


# Paths that reach a file of the image (or a guest volume) when bind-mounted over: not the kernel's.
BLANKED = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/usr/bin/app",
    # A process's magic links lead back into the container: its working directory, its root, its files.
    "/proc/self/cwd/etc/passwd",
    "/proc/thread-self/cwd/etc/passwd",
    "/proc/1/cwd/contrast/tls-config/mesh-ca.pem",
    "/proc/self/fd/3",
    "/proc/self/root",
    "/proc/../etc/passwd",
    "/sys/../etc/passwd",
    "/proc/./self/cwd/etc/passwd",
    "proc/kcore",
)


def masked_path_cases(s: Subject) -> list[Case]:
    """A masked path is /dev/null bind-mounted over it: anywhere but /proc and /sys it empties a file.

    The host could blank a CA bundle, a configuration or a secret the initializer wrote; a read-only path
    could stop the initializer writing its secrets. Extra kernel paths (containerd adds some) stay allowed.
    """
    pod = s.pod
    state = pod.state_with()
    out = []
    for name in container_names(s):
        legit = pod.container(name)
        legit["OCI"]["Linux"]["MaskedPaths"] += [
            "/proc/interrupts",
            "/sys/devices/system/cpu/cpu0/thermal_throttle",
        ]
        legit["OCI"]["Linux"]["ReadonlyPaths"].append("/proc/sys/kernel")
        out.append(
            Case(
                f"{s.key}/masked/{name}: more kernel paths",
                s.key,
                "CreateContainerRequest",
                legit,
                True,
                state,
            )
        )
        for path in BLANKED:
            for key in ("MaskedPaths", "ReadonlyPaths"):
                req = pod.container(name)
                req["OCI"]["Linux"][key].append(path)
                out.append(
                    Case(
                        f"{s.key}/masked/{name}: {key} {path}",
                        s.key,
                        "CreateContainerRequest",
                        req,
                        False,
                        state,
                    )
                )
        req = pod.container(name)
        req["OCI"]["Linux"]["ReadonlyPaths"].append(inject.SECRETS_MOUNT_PATH)
        out.append(
            Case(
                f"{s.key}/masked/{name}: read-only secrets",
                s.key,
                "CreateContainerRequest",
                req,
                False,
                state,
            )
        )
    return out


def _storage_at(req: dict[str, Any], mount_point: str) -> dict[str, Any]:
    return next(x for x in req["storages"] if x["mount_point"] == mount_point)


def device_bindings(s: Subject, name: str) -> dict[str, str]:
    """The policy state's device → volume bindings after ``name`` was created (block emptyDirs only)."""
    req = s.pod.container(name)
    spec = s.pod.container_spec(name)
    by_dest = {m["mountPath"]: m["name"] for m in spec.get("volumeMounts") or []}
    return {
        "device-" + m["source"][len(BLOCK_DIR) + 1 :]: by_dest[m["destination"]]
        for m in req["OCI"]["Mounts"]
        if m["source"].startswith(BLOCK_DIR + "/")
    }


def block_device_cases(s: Subject) -> list[Case]:
    """A block emptyDir's device was not tied to its volume: two volumes could be one file system.

    Within one request the host backs the app's keys volume with the cache's device; across requests it
    mounts the device that holds the app's keys as the proxy's cache. Either way data the pod keeps apart
    (keys, and a cache another container reads) lands in one file system.
    """
    pod = s.pod
    app, proxy = pod.container("app"), pod.container("proxy")
    cache = mount(app, "/var/cache/app")["source"]
    keys = mount(app, "/etc/app/keys")["source"]
    assert cache.startswith(BLOCK_DIR)
    assert keys.startswith(BLOCK_DIR)
    assert cache != keys
    after_app = {**pod.state_with("app"), **device_bindings(s, "app")}

    def one_device(r: dict[str, Any]) -> None:
        mount(r, "/etc/app/keys")["source"] = cache
        r["storages"].remove(_storage_at(r, keys))

    def keys_as_cache(r: dict[str, Any]) -> None:
        store = copy.deepcopy(_storage_at(app, keys))
        r["storages"] = [x for x in r["storages"] if x["mount_point"] != cache] + [store]
        mount(r, "/var/cache/proxy")["source"] = keys

    return [
        Case(
            f"{s.key}/device/app",
            s.key,
            "CreateContainerRequest",
            pod.container("app"),
            True,
            pod.state_with(),
        ),
        Case(f"{s.key}/device/proxy after app", s.key, "CreateContainerRequest", proxy, True, after_app),
        Case(
            f"{s.key}/device/two volumes on one device",
            s.key,
            "CreateContainerRequest",
            mutated(pod.container("app"), one_device),
            False,
            pod.state_with(),
        ),
        Case(
            f"{s.key}/device/the app's keys as the proxy's cache",
            s.key,
            "CreateContainerRequest",
            mutated(pod.container("proxy"), keys_as_cache),
            False,
            after_app,
        ),
    ]


def create_sandbox_twice_cases(s: Subject) -> list[Case]:
    """kata-agent empties /run/kata-containers on every CreateSandboxRequest, guest-private volumes too."""
    pod = s.pod
    req = pod.create_sandbox()
    return [
        Case(f"{s.key}/sandbox twice/first", s.key, "CreateSandboxRequest", req, True, {}),
        Case(
            f"{s.key}/sandbox twice/again",
            s.key,
            "CreateSandboxRequest",
            req,
            False,
            {"create_sandbox": True},
        ),
        Case(
            f"{s.key}/sandbox twice/after the pause container",
            s.key,
            "CreateSandboxRequest",
            req,
            False,
            pod.state_with(),
        ),
    ]


def sandbox_id_reuse_cases(s: Subject) -> list[Case]:
    """A container created under the sandbox's own id: its root, bundle and exec target are the pause's."""
    pod = s.pod
    out = []
    for name in container_names(s):
        text = json.dumps(pod.container(name)).replace(pod.cid(name), pod.sandbox_id)
        out.append(
            Case(
                f"{s.key}/sandbox id/{name}",
                s.key,
                "CreateContainerRequest",
                json.loads(text),
                False,
                pod.state_with(),
            )
        )
    return out


def setuid_copy_cases(s: Subject) -> list[Case]:
    """kata-agent keeps the host's mode bits on copied files, and volumes are not mounted nosuid.

    A set-user-ID root program in a ConfigMap directory lifts any process of the container to root, past
    its pinned user; set-group-ID likewise to a group the host picks.
    """
    pod = s.pod
    out = []
    regular = [r for r in pod.copy_files() if r["file_type"] == "Regular"]
    directories = [r for r in pod.copy_files() if r["file_type"] == "Directory"]
    for i, r in enumerate(regular):
        for bits, label in ((0o4000, "set-user-ID"), (0o2000, "set-group-ID"), (0o6000, "both")):
            attack = {**r, "file_mode": r["file_mode"] | bits | 0o111}
            out.append(Case(f"{s.key}/copy mode/{i} {label}", s.key, "CopyFileRequest", attack, False))
    for i, r in enumerate(directories):
        attack = {**r, "file_mode": r["file_mode"] | 0o4000}
        out.append(
            Case(f"{s.key}/copy mode/directory {i} set-user-ID", s.key, "CopyFileRequest", attack, False)
        )
    if directories:
        top = directories[0]["path"]
        out.append(
            Case(
                f"{s.key}/copy mode/nested set-user-ID program",
                s.key,
                "CopyFileRequest",
                copy_request("Regular", top + "/sh", mode=0o4755),
                False,
            )
        )
    return out


FINDINGS: dict[str, Callable[[Subject], list[Case]]] = {
    "loopback": loopback_cases,
    "mount order": mount_order_cases,
    "masked paths": masked_path_cases,
    "sandbox twice": create_sandbox_twice_cases,
    "sandbox id": sandbox_id_reuse_cases,
    "setuid": setuid_copy_cases,
}


def review_cases(s: Subject) -> list[Case]:
    out = [c for fn in FINDINGS.values() for c in fn(s)]
    if s.key == "rich_block":
        out += block_device_cases(s)
    return out
