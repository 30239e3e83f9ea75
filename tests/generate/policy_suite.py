"""The adversarial policy suite's cases: legitimate requests, curated attacks, and every-field mutations.

Subjects are generated policies with a model of their pod (:mod:`kata_requests`): a rich pod that uses
every feature the policy pins, and every confidential workload of ``deploy/examples`` and
``deploy/kubernetes`` as ``contrast generate`` writes them. For each subject:

* the legitimate requests of a pod's life are allowed;
* curated attacks (the two review bypasses among them) are denied;
* for the rich pod, every leaf of every request is changed, every list grown and shrunk, and every map
  given and stripped of a key; each such request is denied unless :func:`unpinned` names the field as one
  the policy deliberately leaves to the host, with the reason.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from contrast.generate import annotations as ann
from contrast.generate import inject, mesh
from contrast.generate import policy as pol
from contrast.generate.generator import Options, pod_settings, process
from contrast.generate.imageconfig import ImageConfig
from contrast.generate.images import INITIALIZER_IMAGE, normalize
from contrast.generate.workloads import Workload, as_workload
from contrast.generate.yamldocs import iter_yaml_paths, read_file
from tests.generate.generate_builders import digest_image
from tests.generate.kata_requests import Pod, hex_id
from tests.generate.policy_engines import Case, rego_of

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

APP_IMAGE = digest_image("shop/app")
PROXY_IMAGE = digest_image("shop/proxy")
IMAGE_CONFIGS = {
    normalize(APP_IMAGE): ImageConfig(
        entrypoint=("/usr/bin/app",),
        cmd=("--serve",),
        env=("PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOSTNAME=from-the-image"),
        user="1000:1000",
        working_dir="/srv",
        volumes=("/var/cache/app", "/var/lib/app"),
    ),
    normalize(PROXY_IMAGE): ImageConfig(
        entrypoint=("/usr/local/bin/proxy",),
        cmd=("--listen", ":8443"),
        env=("PATH=/usr/local/bin:/bin",),
    ),
}
APP_EXEC = ["/usr/bin/app", "--health"]
NOTE = 'see {"a": [1, 2]} (\\d+|$x)^*?.\nsecond line\ttab'


@dataclass(frozen=True)
class Subject:
    key: str  # short identifier, also the OPA package name
    ref: str
    policy: pol.Policy
    pod: Pod

    @property
    def text(self) -> str:
        return rego_of(self.policy)

    @property
    def data(self) -> dict[str, Any]:
        return self.policy.data


def rich_spec() -> dict[str, Any]:
    """A pod using everything the policy pins: image configs, env sources, volumes, security contexts."""
    spec: dict[str, Any] = {
        "runtimeClassName": "contrast-cc",
        "shareProcessNamespace": True,
        "securityContext": {
            "fsGroup": 4000,
            "supplementalGroups": [5000],
            "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65000"}],
        },
        "containers": [
            {
                "name": "app",
                "image": APP_IMAGE,
                "command": ["/usr/bin/app"],
                "args": ["--port", "$(PORT)", "--mode=$(MODE)"],
                "env": [
                    {"name": "PORT", "value": "8080"},
                    {"name": "MODE", "value": "prod"},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
                    {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    # The template's annotation, pinned: JSON full of regex metacharacters, and a newline.
                    {
                        "name": "NOTE",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}},
                    },
                ],
                "terminationMessagePath": "/tmp/app-termination",
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/app"},
                    # A guest-private volume inside a host-supplied one: the host's must stay below it.
                    {"name": "keys", "mountPath": "/etc/app/keys"},
                    {"name": "cache", "mountPath": "/var/cache/app"},
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "podinfo", "mountPath": "/etc/podinfo", "readOnly": True},
                ],
                "securityContext": {
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                },
            },
            {
                "name": "proxy",
                "image": PROXY_IMAGE,
                "tty": True,
                "securityContext": {"runAsUser": 2000, "runAsGroup": 3000},
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch", "readOnly": True},
                    {"name": "cache", "mountPath": "/var/cache/proxy", "readOnly": True},
                ],
            },
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": "app-config"}},
            {"name": "cache", "emptyDir": {}},
            {"name": "keys", "emptyDir": {}},
            {"name": "scratch", "emptyDir": {"medium": "Memory"}},
            {
                "name": "podinfo",
                "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]},
            },
        ],
    }
    inject.inject(
        spec,
        image=INITIALIZER_IMAGE,
        nats_url="nats://nats:4222",
        pins={inject.COORDINATOR_HASHES_ENV: f"verifier:{'ab' * 32},ca:{'cd' * 32}"},
        ref="rich",
    )
    return spec


def example_pod_name(kind: str, name: str) -> str:
    """A name the controller could give one of the workload's pods (see workloads.pod_names)."""
    return {
        "Pod": name,
        "StatefulSet": f"{name}-0",
        "Deployment": f"{name}-6b9d5c7f4d-x7kzq",
        "Job": f"{name}-x7kzq",
        "CronJob": f"{name}-28475920-x7kzq",
    }.get(kind, f"{name}-x7kzq")


def rich_workload() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop-api", "namespace": "shop"},  # a hyphen: escaped in the name patterns
        "spec": {
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {
                "metadata": {
                    "labels": {"app": "shop", "tier": "back-end.v1"},
                    "annotations": {ann.EXEC_COMMANDS: json.dumps({"app": [APP_EXEC]}), "note": NOTE},
                },
                "spec": rich_spec(),
            },
        },
    }


@cache
def rich_subject(emptydir_mode: str = "local") -> Subject:
    w = as_workload(rich_workload())
    assert w is not None
    policy = pol.build(
        w.pod_spec,
        namespace=w.namespace,
        ref=w.ref,
        settings=pod_settings(w),
        images=IMAGE_CONFIGS.get,
    )
    name = example_pod_name(w.kind, w.name)
    pod = Pod(
        spec=w.pod_spec,
        namespace=w.namespace,
        name=name,
        images=IMAGE_CONFIGS,
        emptydir_mode=emptydir_mode,
        labels={"app": "shop", "tier": "back-end.v1"},
        annotations={"note": NOTE},
    )
    return Subject(key=f"rich_{emptydir_mode}", ref=w.ref, policy=policy, pod=pod)


@cache
def deployment_subjects() -> tuple[Subject, ...]:
    """Every confidential workload of deploy/examples and deploy/kubernetes, as generate writes it.

    ``process`` rewrites the documents in memory only; the files are not touched.
    """
    files = [read_file(p) for p in iter_yaml_paths([DEPLOY / "examples", DEPLOY / "kubernetes"])]
    process(files, Options(offline=True))
    out = []
    for f in files:
        for doc in f.documents:
            w: Workload | None = as_workload(doc.data)
            if w is None:
                continue
            initdata = pol.decode_annotation(ann.get_pod_annotation(w.template, ann.KATA_INITDATA))
            data = json.loads(
                rego_of(pol.Policy(initdata=initdata, data={})).split("\npolicy_data := ", 1)[1]
            )
            pod = Pod(spec=w.pod_spec, namespace=w.namespace, name=example_pod_name(w.kind, w.name))
            key = f"{f.path.parent.name}_{w.name}".replace("-", "_")
            out.append(Subject(key=key, ref=w.ref, policy=pol.Policy(initdata=initdata, data=data), pod=pod))
    return tuple(out)


def all_subjects() -> tuple[Subject, ...]:
    return (rich_subject("local"), rich_subject("block"), *deployment_subjects())


# ---- Legitimate requests


def container_names(s: Subject) -> list[str]:
    return [c["name"] for c in s.pod.containers()]


def create_sandbox_cases(s: Subject) -> list[Case]:
    pod = s.pod
    out = [Case(f"{s.key}/CreateSandboxRequest", s.key, "CreateSandboxRequest", pod.create_sandbox(), True)]
    return out + [
        Case(f"{s.key}/sandbox/{label}", s.key, "CreateSandboxRequest", req, False)
        for label, req in sandbox_request_attacks(s)
    ]


def sandbox_container_cases(s: Subject) -> list[Case]:
    pod = s.pod
    out = [Case(f"{s.key}/sandbox-container", s.key, "CreateContainerRequest", pod.sandbox_container(), True)]
    out += [
        Case(f"{s.key}/pause/{label}", s.key, "CreateContainerRequest", req, False)
        for label, req in pause_attacks(s)
    ]
    out.append(
        Case(
            f"{s.key}/order/second sandbox",
            s.key,
            "CreateContainerRequest",
            pod.sandbox_container(),
            False,
            pod.state_with(),
        )
    )
    return out


def container_cases(s: Subject) -> list[Case]:
    """Each container as the runtime creates it, and the attacks on it."""
    pod = s.pod
    out: list[Case] = []
    earlier: list[str] = []
    for name in container_names(s):
        out.append(
            Case(
                f"{s.key}/container/{name}",
                s.key,
                "CreateContainerRequest",
                pod.container(name),
                True,
                pod.state_with(*earlier),
            )
        )
        earlier.append(name)
        for label, fn in curated_container_attacks(s, name):
            req = mutated(pod.container(name), fn)
            out.append(
                Case(
                    f"{s.key}/attack/{name}/{label}",
                    s.key,
                    "CreateContainerRequest",
                    req,
                    False,
                    pod.state_with(),
                )
            )
    first = container_names(s)[0]
    out += [
        Case(
            f"{s.key}/order/container before sandbox",
            s.key,
            "CreateContainerRequest",
            pod.container(first),
            False,
            {},
        ),
        Case(
            f"{s.key}/order/container twice",
            s.key,
            "CreateContainerRequest",
            pod.container(first),
            False,
            pod.state_with(first),
        ),
    ]
    return out


def bypass_cases(s: Subject, which: str) -> list[Case]:
    make = bypass_path_hijack if which == "path" else bypass_rootfs
    return [
        Case(f"{s.key}/bypass/{name}/{label}", s.key, rule, req, False, state)
        for name in container_names(s)
        for label, req, rule, state in make(s, name)
    ]


def exec_with_terminal(s: Subject, name: str, argv: list[str]) -> dict[str, Any]:
    """kubectl exec -t: containerd sets Terminal and adds TERM=xterm to the container's environment."""
    req = s.pod.exec_process(name, argv)
    req["process"]["Terminal"] = True
    if not any(e.startswith("TERM=") for e in req["process"]["Env"]):
        req["process"]["Env"].append("TERM=xterm")
    return req


def exec_cases(s: Subject) -> list[Case]:
    pod = s.pod
    out = [
        Case(
            f"{s.key}/exec -t/{c['name']}",
            s.key,
            "ExecProcessRequest",
            exec_with_terminal(s, c["name"], argv),
            True,
            pod.state_with(c["name"]),
        )
        for c in s.data["containers"]
        for argv in c["exec"]
    ]
    out += [
        Case(
            f"{s.key}/exec/{c['name']}",
            s.key,
            "ExecProcessRequest",
            pod.exec_process(c["name"], argv),
            True,
            pod.state_with(c["name"]),
        )
        for c in s.data["containers"]
        for argv in c["exec"]
    ]
    return out + [
        Case(f"{s.key}/exec/{label}", s.key, "ExecProcessRequest", req, False, state)
        for label, req, state in exec_attacks(s)
    ]


def copy_file_cases(s: Subject) -> list[Case]:
    out = [
        Case(f"{s.key}/CopyFileRequest/{i}", s.key, "CopyFileRequest", req, True)
        for i, req in enumerate(s.pod.copy_files())
    ]
    return out + [
        Case(f"{s.key}/copy/{label}", s.key, "CopyFileRequest", req, False) for label, req in copy_attacks(s)
    ]


def remove_cases(s: Subject) -> list[Case]:
    pod = s.pod
    last = container_names(s)[-1]
    return [
        Case(
            f"{s.key}/RemoveContainerRequest",
            s.key,
            "RemoveContainerRequest",
            {"container_id": pod.cid(last)},
            True,
            pod.state_with(last),
        ),
        Case(
            f"{s.key}/RemoveContainerRequest/unknown",
            s.key,
            "RemoveContainerRequest",
            {"container_id": hex_id("gone")},
            True,
            pod.state_with(),
        ),
    ]


# The pod's interface, its default route and the gateway's neighbour entry, in the shapes of Kata's test data.
INTERFACE: dict[str, Any] = {
    "IPAddresses": [{"address": "10.244.1.17", "family": 0, "mask": "24"}],
    "device": "eth0",
    "hwAddr": "66:74:9f:6a:96:01",
    "mtu": 1500,
    "name": "eth0",
    "pciPath": "",
    "raw_flags": 0,
    "type_": "",
}
ROUTE: dict[str, Any] = {
    "dest": "",
    "device": "eth0",
    "family": 0,
    "gateway": "10.244.1.1",
    "scope": 0,
    "source": "",
}
NEIGHBOUR: dict[str, Any] = {
    "device": "eth0",
    "flags": 0,
    "lladdr": "00:00:5e:00:53:01",
    "state": 128,
    "toIPAddress": {"address": "10.244.1.1", "family": 0, "mask": ""},
}


def network_cases(s: Subject) -> list[Case]:
    """UpdateInterface, UpdateRoutes and AddARPNeighbors in the shapes of Kata's own test data."""
    iface, route, neigh = INTERFACE, ROUTE, NEIGHBOUR
    rows: list[tuple[str, str, dict[str, Any], bool]] = [
        ("UpdateInterfaceRequest", "plain", {"interface": iface}, True),
        ("UpdateInterfaceRequest", "NOARP", {"interface": {**iface, "raw_flags": 128}}, True),
        ("UpdateInterfaceRequest", "promiscuous flag", {"interface": {**iface, "raw_flags": 256}}, False),
        ("UpdateInterfaceRequest", "loopback", {"interface": {**iface, "name": "lo"}}, False),
        (
            "UpdateInterfaceRequest",
            "null hardware address",
            {"interface": {**iface, "hwAddr": "00:00:00:00:00:00"}},
            False,
        ),
        ("UpdateRoutesRequest", "default route", {"routes": {"Routes": [route]}}, True),
        (
            "UpdateRoutesRequest",
            "route over loopback",
            {"routes": {"Routes": [route, {**route, "device": "lo"}]}},
            False,
        ),
        (
            "UpdateRoutesRequest",
            "loopback source",
            {"routes": {"Routes": [{**route, "source": "127.0.0.1"}]}},
            False,
        ),
        (
            "UpdateRoutesRequest",
            "IPv6 loopback source",
            {"routes": {"Routes": [{**route, "source": "::1"}]}},
            False,
        ),
        ("AddARPNeighborsRequest", "permanent neighbour", {"neighbors": {"ARPNeighbors": [neigh]}}, True),
        (
            "AddARPNeighborsRequest",
            "reachable router",
            {"neighbors": {"ARPNeighbors": [{**neigh, "state": 2, "flags": 128}]}},
            True,
        ),
        (
            "AddARPNeighborsRequest",
            "loopback device",
            {"neighbors": {"ARPNeighbors": [{**neigh, "device": "lo"}]}},
            False,
        ),
        (
            "AddARPNeighborsRequest",
            "loopback address",
            {
                "neighbors": {
                    "ARPNeighbors": [
                        {**neigh, "toIPAddress": {"address": "127.1.2.3", "family": 0, "mask": ""}}
                    ]
                }
            },
            False,
        ),
        (
            "AddARPNeighborsRequest",
            "incomplete state",
            {"neighbors": {"ARPNeighbors": [{**neigh, "state": 0}]}},
            False,
        ),
        (
            "AddARPNeighborsRequest",
            "other flags",
            {"neighbors": {"ARPNeighbors": [{**neigh, "flags": 5}]}},
            False,
        ),
        (
            "AddARPNeighborsRequest",
            "a mask",
            {
                "neighbors": {
                    "ARPNeighbors": [
                        {**neigh, "toIPAddress": {"address": "10.0.0.1", "family": 0, "mask": "24"}}
                    ]
                }
            },
            False,
        ),
    ]
    return [Case(f"{s.key}/{rule}/{label}", s.key, rule, req, ok) for rule, label, req, ok in rows]


def all_cases(s: Subject) -> list[Case]:
    out = (
        create_sandbox_cases(s)
        + sandbox_container_cases(s)
        + container_cases(s)
        + bypass_cases(s, "path")
        + bypass_cases(s, "rootfs")
        + exec_cases(s)
        + copy_file_cases(s)
        + remove_cases(s)
        + request_type_cases(s)
        + network_cases(s)
        + mesh_cases(s)
    )
    if s.key.startswith("rich"):
        out += field_cases(s)
    return out


def meshed(s: Subject) -> bool:
    return mesh.SIDECAR_NAME in container_names(s)


def _caps_add(req: dict[str, Any], cap: str) -> None:
    for k in ("Bounding", "Effective", "Permitted"):
        req["OCI"]["Process"]["Capabilities"][k].append(cap)


def _caps_drop(req: dict[str, Any], cap: str) -> None:
    for k in ("Bounding", "Effective", "Permitted"):
        caps = req["OCI"]["Process"]["Capabilities"][k]
        caps[:] = [c for c in caps if c != cap]


def mesh_attacks(s: Subject) -> list[tuple[str, str, Mutation]]:
    """(container, label, mutation): a host that would weaken or bypass a meshed pod's sidecar."""
    sidecar = mesh.SIDECAR_NAME
    out: list[tuple[str, str, Mutation]] = [
        (sidecar, "ingress disabled", lambda r: env_set(r, "CONTRAST_INGRESS_PROXY_CONFIG", "DISABLED")),
        (
            sidecar,
            "every port passed through",
            lambda r: env_set(r, "CONTRAST_INGRESS_PROXY_CONFIG", "all#1#true##web#8080#true"),
        ),
        (sidecar, "egress SAN check off", lambda r: env_set(r, "CONTRAST_EGRESS_VERIFY_SAN", "false")),
        (
            sidecar,
            "egress to another remote",
            lambda r: env_set(r, "CONTRAST_EGRESS_PROXY_CONFIG", "api#127.137.0.1:8080#evil.example:8080"),
        ),
        (sidecar, "certificates from elsewhere", lambda r: env_set(r, "CONTRAST_MESH_TLS_DIR", "/tmp")),
        (sidecar, "no redirection", lambda r: env_set(r, "CONTRAST_MESH_REDIRECT", "none")),
        (
            sidecar,
            "the opener instead of the sidecar",
            lambda r: r["OCI"]["Process"]["Args"].extend(["default-deny", "remove"]),
        ),
        (sidecar, "without NET_ADMIN", lambda r: _caps_drop(r, "CAP_NET_ADMIN")),
    ]
    for c in s.pod.spec.get("containers") or []:
        out.append((c["name"], "NET_ADMIN for the application", lambda r: _caps_add(r, "CAP_NET_ADMIN")))
        out.append(
            (
                c["name"],
                "the application runs the sidecar",
                lambda r: r["OCI"]["Process"].update(Args=inject.service_command("contrast.meshproxy")),
            )
        )
    return out


def mesh_cases(s: Subject) -> list[Case]:
    """On a pod with the service-mesh sidecar: its configuration, command and privileges are the pod's own,
    and the application containers cannot take the sidecar's place or privilege."""
    if not meshed(s):
        return []
    pod = s.pod
    return [
        Case(
            f"{s.key}/mesh/{name}/{label}",
            s.key,
            "CreateContainerRequest",
            mutated(pod.container(name), fn),
            False,
            pod.state_with(),
        )
        for name, label, fn in mesh_attacks(s)
    ]


LIFECYCLE = {
    "DestroySandboxRequest": {},
    "GetOOMEventRequest": {},
    "GuestDetailsRequest": {"mem_block_size": True, "mem_hotplug_probe": True},
    "OnlineCPUMemRequest": {"cpu_only": False, "nb_cpus": 2, "wait": True},
    "RemoveStaleVirtiofsShareMountsRequest": {},
    "SignalProcessRequest": {"container_id": hex_id("c"), "exec_id": "", "signal": 15},
    "StartContainerRequest": {"container_id": hex_id("c")},
    "StatsContainerRequest": {"container_id": hex_id("c")},
    "TtyWinResizeRequest": {"column": 80, "container_id": hex_id("c"), "exec_id": "e", "row": 24},
    "WaitProcessRequest": {"container_id": hex_id("c"), "exec_id": "e"},
}
# Every other request type kata-agent asks the policy about, with a plausible request: all denied.
DENIED = {
    "AddSwapPathRequest": {"path": "/dev/vdb"},
    "AddSwapRequest": {"PCIPath": [1, 2]},
    "AllowRequestsFailingPolicy": {},
    "CloseStdinRequest": {"container_id": hex_id("c"), "exec_id": "e"},
    "GetDiagnosticDataRequest": {"container_id": hex_id("c"), "log_type": "all"},
    "GetIPTablesRequest": {"is_ipv6": False},
    "GetMetricsRequest": {},
    "ListInterfacesRequest": {},
    "ListRoutesRequest": {},
    "MemAgentCompactConfig": {"disabled": False},
    "MemAgentMemcgConfig": {"disabled": False},
    "MemHotplugByProbeRequest": {"memHotplugProbeAddr": [4096]},
    "PauseContainerRequest": {"container_id": hex_id("c")},
    "PullImageRequest": {"image": "evil", "container_id": hex_id("c")},
    "ReseedRandomDevRequest": {"data": "AAAA"},
    "ResizeVolumeRequest": {"size": 1, "volume_guest_path": "/x"},
    "ResumeContainerRequest": {"container_id": hex_id("c")},
    "SetGuestDateTimeRequest": {"Sec": 0, "Usec": 0},
    "SetIPTablesRequest": {"data": "KiBmaWx0ZXI=", "is_ipv6": False},
    "SetPolicyRequest": {"policy": "package agent_policy\ndefault CreateContainerRequest := true\n"},
    "StartTracingRequest": {},
    "StopTracingRequest": {},
    "UpdateContainerRequest": {"container_id": hex_id("c"), "resources": {"CPU": {"Quota": 1}}},
    "UpdateEphemeralMountsRequest": {"storages": []},
    "VolumeStatsRequest": {"volume_guest_path": "/x"},
    "WriteStreamRequest": {"container_id": hex_id("c"), "data": "ZWNobyBwd25lZAo=", "exec_id": "e"},
    "ReadStreamRequest": {"container_id": hex_id("c"), "exec_id": "e", "len": 4096},
    "ExecProcessRequest": {
        "container_id": hex_id("c"),
        "exec_id": "e",
        "process": {"Args": ["/bin/sh"]},
        "string_user": None,
    },
    "CopyFileRequest": {"file_type": "Regular", "path": "/etc/passwd"},
    "CreateContainerRequest": {},
    "CreateSandboxRequest": {},
    "UpdateInterfaceRequest": {},
    "UpdateRoutesRequest": {},
    "AddARPNeighborsRequest": {},
}
KATA_AGENT_REQUESTS = sorted({*LIFECYCLE, *DENIED, "RemoveContainerRequest"})


def request_type_cases(s: Subject) -> list[Case]:
    out = [Case(f"{s.key}/type/{rule}", s.key, rule, req, True) for rule, req in LIFECYCLE.items()]
    out += [Case(f"{s.key}/type/{rule}", s.key, rule, req, False) for rule, req in DENIED.items()]
    return out


# ---- Curated attacks

Mutation = Callable[[dict[str, Any]], None]


def mutated(request: dict[str, Any], fn: Mutation) -> dict[str, Any]:
    fn(request)
    return request


def virtiofs(mount_point: str) -> dict[str, Any]:
    """The storage by which the Kata runtime shares a host directory into the guest."""
    return {
        "driver": "virtio-fs",
        "driver_options": [],
        "fs_group": None,
        "fstype": "virtiofs",
        "mount_point": mount_point,
        "options": ["nodev"],
        "source": "kataShared",
    }


def mount(req: dict[str, Any], destination: str) -> dict[str, Any]:
    for m in req["OCI"]["Mounts"]:
        if m["destination"] == destination:
            return m  # type: ignore[no-any-return]
    raise KeyError(destination)


def env_set(req: dict[str, Any], name: str, value: str) -> None:
    env = req["OCI"]["Process"]["Env"]
    env[:] = [e for e in env if not e.startswith(f"{name}=")] + [f"{name}={value}"]


def bypass_path_hijack(s: Subject, name: str) -> list[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """Review bypass 1: PATH into the termination-log mount, backed by a host directory with a `python`."""
    pod = s.pod
    cid = pod.cid(name)
    c = pod.container_spec(name)
    term = c.get("terminationMessagePath", "/dev/termination-log")
    state = pod.state_with()
    hijack = pod.container(name)
    env_set(hijack, "PATH", term)
    hijack["OCI"]["Process"]["Args"][0] = "python"
    only_path = pod.container(name)
    env_set(only_path, "PATH", term)
    dir_source = pod.container(name)
    mount(dir_source, term)["source"] = pod.shared(cid, "bin")
    other_file = pod.container(name)
    mount(other_file, term)["source"] = pod.shared(cid, "hosts")
    foreign = pod.container(name)
    mount(foreign, term)["source"] = pod.shared(hex_id("another container"), "termination-log")
    guest_path = pod.container(name)
    mount(guest_path, term)["source"] = "/run/kata-containers/shared/containers"
    relative = pod.container(name)
    relative["OCI"]["Process"]["Args"][0] = relative["OCI"]["Process"]["Args"][0].rsplit("/", 1)[-1]
    log = pod.shared(cid, term.rsplit("/", 1)[-1])
    return [
        ("PATH=<termination log> and a relative python", hijack, "CreateContainerRequest", state),
        ("PATH=<termination log>", only_path, "CreateContainerRequest", state),
        ("termination log from a host directory", dir_source, "CreateContainerRequest", state),
        ("termination log from another host file", other_file, "CreateContainerRequest", state),
        ("termination log of another container", foreign, "CreateContainerRequest", state),
        ("termination log from the whole shared directory", guest_path, "CreateContainerRequest", state),
        ("relative argv[0]", relative, "CreateContainerRequest", state),
        (
            "termination log copied in as a directory",
            {"file_type": "Directory", "path": log},
            "CopyFileRequest",
            {},
        ),
        (
            "a python inside the termination log",
            {"file_type": "Regular", "path": log + "/python"},
            "CopyFileRequest",
            {},
        ),
        (
            "a symlink as the termination log",
            {"file_type": "Symlink", "path": log, "symlink_target": "x"},
            "CopyFileRequest",
            {},
        ),
    ]


def bypass_rootfs(s: Subject, name: str) -> list[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """Review bypass 2: the pinned image name on the annotation, any root file system behind it."""
    pod = s.pod
    cid = pod.cid(name)
    state = pod.state_with()
    evil_image = "docker.io/evil/app@sha256:" + hex_id("evil")

    def variant(fn: Mutation) -> dict[str, Any]:
        return mutated(pod.container(name), fn)

    def rootfs(req: dict[str, Any]) -> dict[str, Any]:
        return next(s for s in req["storages"] if s["driver"] == "image_guest_pull")  # type: ignore[no-any-return]

    def no_pull(req: dict[str, Any]) -> None:
        req["storages"] = [s for s in req["storages"] if s["driver"] != "image_guest_pull"]

    def shared_root(req: dict[str, Any]) -> None:
        no_pull(req)
        req["OCI"]["Root"]["Path"] = pod.shared(cid, "rootfs")

    def host_root(req: dict[str, Any]) -> None:
        req["storages"].append(virtiofs(f"/run/kata-containers/{cid}/rootfs"))

    def pause_as_container(req: dict[str, Any]) -> None:
        opt = rootfs(req)["driver_options"]
        meta = json.loads(opt[0].split("=", 1)[1])
        meta["metadata"]["io.kubernetes.cri.container-type"] = "sandbox"
        opt[0] = "image_guest_pull=" + json.dumps(meta)

    return [
        (
            "other image behind the pinned name",
            variant(lambda r: rootfs(r).update(source=evil_image)),
            "CreateContainerRequest",
            state,
        ),
        ("no guest pull: a host root file system", variant(no_pull), "CreateContainerRequest", state),
        ("root path into the host-shared directory", variant(shared_root), "CreateContainerRequest", state),
        ("a host file system over the root path", variant(host_root), "CreateContainerRequest", state),
        (
            "guest pull mounted elsewhere",
            variant(lambda r: rootfs(r).update(mount_point="/run/kata-containers/x/rootfs")),
            "CreateContainerRequest",
            state,
        ),
        (
            "root path elsewhere",
            variant(lambda r: r["OCI"]["Root"].update(Path="/run/kata-containers/shared/containers")),
            "CreateContainerRequest",
            state,
        ),
        (
            "a prestart hook",
            variant(
                lambda r: r["OCI"].update(
                    Hooks={"Prestart": [{"Path": "/bin/sh", "Args": ["sh", "-c", "id"]}]}
                )
            ),
            "CreateContainerRequest",
            state,
        ),
        (
            "a createRuntime hook",
            variant(lambda r: r["OCI"].update(Hooks={"CreateRuntime": [{"Path": "/x"}]})),
            "CreateContainerRequest",
            state,
        ),
        ("the pause bundle as the root", variant(pause_as_container), "CreateContainerRequest", state),
        (
            "image name changed with the storage",
            variant(
                lambda r: (
                    rootfs(r).update(source=evil_image),
                    r["OCI"]["Annotations"].update({"io.kubernetes.cri.image-name": evil_image}),
                )
            ),
            "CreateContainerRequest",
            state,
        ),
    ]


def curated_container_attacks(s: Subject, name: str) -> list[tuple[str, Mutation]]:
    """Attacks on one container's CreateContainerRequest that every subject must deny."""
    pod = s.pod
    cid = pod.cid(name)
    c = pod.container_spec(name)
    mounts = {m["destination"] for m in pod.container(name)["OCI"]["Mounts"]}
    secrets = inject.SECRETS_MOUNT_PATH
    out: list[tuple[str, Mutation]] = [
        ("LD_PRELOAD", lambda r: r["OCI"]["Process"]["Env"].append("LD_PRELOAD=/tmp/evil.so")),
        ("duplicate PATH", lambda r: r["OCI"]["Process"]["Env"].append("PATH=/tmp")),
        ("changed PATH", lambda r: env_set(r, "PATH", "/tmp:/usr/bin")),
        (
            "dropped PATH",
            lambda r: r["OCI"]["Process"].update(
                Env=[e for e in r["OCI"]["Process"]["Env"] if not e.startswith("PATH=")]
            ),
        ),
        ("HOSTNAME with a newline", lambda r: env_set(r, "HOSTNAME", "x\nLD_PRELOAD=/x")),
        (
            "service link with a shell",
            lambda r: r["OCI"]["Process"]["Env"].append("API_SERVICE_HOST=$(reboot)"),
        ),
        ("extra argument", lambda r: r["OCI"]["Process"]["Args"].append("--debug")),
        ("other argv[0]", lambda r: r["OCI"]["Process"]["Args"].__setitem__(0, "/tmp/evil")),
        (
            "working directory",
            lambda r: r["OCI"]["Process"].update(Cwd=r["OCI"]["Process"]["Cwd"].rstrip("/") + "/elsewhere"),
        ),
        (
            "root user",
            lambda r: (
                r["OCI"]["Process"]["User"].update(UID=0, GID=0)
                if r["OCI"]["Process"]["User"]["UID"]
                else r["OCI"]["Process"]["User"].update(UID=1)
            ),
        ),
        (
            "extra group",
            lambda r: r["OCI"]["Process"]["User"]["AdditionalGids"].append(
                0 if 0 not in r["OCI"]["Process"]["User"]["AdditionalGids"] else 6
            ),
        ),
        ("string user", lambda r: r.update(string_user={"uid": "0", "gid": "0", "additional_gids": []})),
        (
            "CAP_SYS_ADMIN",
            lambda r: [
                r["OCI"]["Process"]["Capabilities"][k].append("CAP_SYS_ADMIN")
                for k in ("Bounding", "Effective", "Permitted")
            ],
        ),
        (
            "ambient capability",
            lambda r: r["OCI"]["Process"]["Capabilities"]["Ambient"].append("CAP_NET_RAW"),
        ),
        (
            "NoNewPrivileges flipped",
            lambda r: r["OCI"]["Process"].update(NoNewPrivileges=not r["OCI"]["Process"]["NoNewPrivileges"]),
        ),
        (
            "seccomp from the host",
            lambda r: r["OCI"]["Linux"].update(Seccomp={"defaultAction": "SCMP_ACT_ALLOW"}),
        ),
        ("SELinux label", lambda r: r["OCI"]["Process"].update(SelinuxLabel="system_u:system_r:spc_t:s0")),
        ("apparmor unconfined", lambda r: r["OCI"]["Process"].update(ApparmorProfile="unconfined")),
        (
            "a device",
            lambda r: r["OCI"]["Linux"]["Devices"].append(
                {"Path": "/dev/mem", "Type": "c", "Major": 1, "Minor": 1}
            ),
        ),
        (
            "a device from the request",
            lambda r: r["devices"].append(
                {
                    "container_path": "/dev/vda",
                    "id": "0",
                    "options": [],
                    "type_": "blk",
                    "vm_path": "/dev/vda",
                }
            ),
        ),
        (
            "device cgroup opened",
            lambda r: r["OCI"]["Linux"]["Resources"]["Devices"].append({"Allow": True, "Access": "rwm"}),
        ),
        ("user namespace", lambda r: r["OCI"]["Linux"]["Namespaces"].append({"Path": "", "Type": "user"})),
        (
            "host pid namespace",
            lambda r: r["OCI"]["Linux"]["Namespaces"].append({"Path": "/proc/1/ns/pid", "Type": "pid"}),
        ),
        ("ipc namespace by path", lambda r: r["OCI"]["Linux"]["Namespaces"][0].update(Path="/proc/1/ns/ipc")),
        (
            "no mount namespace",
            lambda r: r["OCI"]["Linux"].update(
                Namespaces=[n for n in r["OCI"]["Linux"]["Namespaces"] if n["Type"] != "mount"]
            ),
        ),
        ("unmasked /proc/kcore", lambda r: r["OCI"]["Linux"]["MaskedPaths"].remove("/proc/kcore")),
        ("writable /proc/sys", lambda r: r["OCI"]["Linux"]["ReadonlyPaths"].remove("/proc/sys")),
        ("extra sysctl", lambda r: r["OCI"]["Linux"]["Sysctl"].update({"kernel.core_pattern": "|/tmp/x"})),
        (
            "rlimit",
            lambda r: r["OCI"]["Process"]["Rlimits"].append({"Type": "RLIMIT_CORE", "Hard": 1, "Soft": 1}),
        ),
        ("host hostname", lambda r: r["OCI"].update(Hostname="evil")),
        (
            "extra host mount",
            lambda r: r["OCI"]["Mounts"].append(
                {"destination": "/host", "options": ["rbind", "rw"], "source": "/", "type_": "bind"}
            ),
        ),
        (
            "shared mount",
            lambda r: r["shared_mounts"].append(
                {"name": "x", "src_ctr": "a", "src_path": "/", "dst_ctr": "b", "dst_path": "/x"}
            ),
        ),
        ("/dev/shm from a shared file", lambda r: mount(r, "/dev/shm").update(source=pod.shared(cid, "shm"))),
        ("writable sysfs", lambda r: mount(r, "/sys").update(options=["nosuid", "noexec", "nodev", "rw"])),
        (
            "/etc/hosts as a directory volume",
            lambda r: mount(r, "/etc/hosts").update(source=pod.shared(cid, "serviceaccount")),
        ),
        (
            "other namespace",
            lambda r: r["OCI"]["Annotations"].update({"io.kubernetes.cri.sandbox-namespace": "kube-system"}),
        ),
        (
            "other sandbox",
            lambda r: r["OCI"]["Annotations"].update({"io.kubernetes.cri.sandbox-id": hex_id("other")}),
        ),
        (
            "unknown container",
            lambda r: r["OCI"]["Annotations"].update({"io.kubernetes.cri.container-name": "debugger"}),
        ),
        (
            "CDI device annotation",
            lambda r: r["OCI"]["Annotations"].update({"cdi.k8s.io/vfio0": "nvidia.com/gpu=0"}),
        ),
        (
            "Kata config annotation",
            lambda r: r["OCI"]["Annotations"].update({"io.katacontainers.config.agent.policy": "x"}),
        ),
        ("pid namespace of the sandbox flipped", lambda r: r.update(sandbox_pidns=not r["sandbox_pidns"])),
        ("container id with a path", lambda r: r.update(container_id="../" + cid[3:])),
        (
            "extra storage",
            lambda r: r["storages"].append(
                {
                    "driver": "local",
                    "driver_options": [],
                    "fs_group": None,
                    "fstype": "local",
                    "mount_point": "/run/kata-containers/x",
                    "options": [],
                    "source": "local",
                }
            ),
        ),
    ]
    if secrets in mounts:
        out += [
            (
                "secrets volume from the host",
                lambda r: mount(r, secrets).update(source=pod.shared(cid, "contrast")),
            ),
            (
                "secrets tmpfs backed by a host device",
                lambda r: [
                    s.update(driver="blk", source="00/00", fstype="ext4")
                    for s in r["storages"]
                    if s["driver"] == "ephemeral"
                ],
            ),
            (
                "secrets volume not mounted",
                lambda r: r["OCI"].update(
                    Mounts=[m for m in r["OCI"]["Mounts"] if m["destination"] != secrets]
                ),
            ),
        ]
    if c.get("env"):
        out.append(("pod variable changed", lambda r: env_set(r, c["env"][-1]["name"], "changed")))
    return out


def sandbox_request_attacks(s: Subject) -> list[tuple[str, dict[str, Any]]]:
    pod = s.pod

    def sandbox(fn: Mutation) -> dict[str, Any]:
        return mutated(pod.create_sandbox(), fn)

    shared = virtiofs("/run/kata-containers/shared/containers")
    return [
        ("kernel module", sandbox(lambda r: r["kernel_modules"].append({"name": "evil", "parameters": []}))),
        (
            "guest hooks",
            sandbox(lambda r: r.update(guest_hook_path="/run/kata-containers/shared/containers")),
        ),
        ("agent pid namespace", sandbox(lambda r: r.update(sandbox_pidns=True))),
        ("host file system shared in", sandbox(lambda r: r["storages"].append(shared))),
        ("shm from a host device", sandbox(lambda r: r["storages"][0].update(driver="blk", source="00/00"))),
        (
            "executable shm",
            sandbox(
                lambda r: r["storages"][0].update(options=["nosuid", "nodev", "mode=1777", "size=67108864"])
            ),
        ),
        ("other host name", sandbox(lambda r: r.update(hostname="evil"))),
        ("DNS line injection", sandbox(lambda r: r["dns"].append("nameserver 10.0.0.1\nnameserver 6.6.6.6"))),
        ("DNS directive", sandbox(lambda r: r["dns"].append("domain evil.example"))),
        ("sandbox id", sandbox(lambda r: r.update(sandbox_id="../x"))),
    ]


def pause_attacks(s: Subject) -> list[tuple[str, dict[str, Any]]]:
    pod = s.pod

    def pause(fn: Mutation) -> dict[str, Any]:
        return mutated(pod.sandbox_container(), fn)

    return [
        (
            "pause process from the request",
            pause(lambda r: r["OCI"]["Process"].update(Args=["/bin/sh", "-c", "id"])),
        ),
        ("pause without the guest bundle", pause(lambda r: r.update(storages=[]))),
        ("pause with a host root", pause(lambda r: r["storages"][0].update(driver="local"))),
        (
            "pause named as a container",
            pause(lambda r: r["OCI"]["Annotations"].update({"io.kubernetes.cri.container-name": "x"})),
        ),
        (
            "pause of another pod",
            pause(lambda r: r["OCI"]["Annotations"].update({"io.kubernetes.cri.sandbox-name": "other-0"})),
        ),
        (
            "pause in another namespace",
            pause(
                lambda r: r["OCI"]["Annotations"].update({"io.kubernetes.cri.sandbox-namespace": "default"})
            ),
        ),
        ("pause id not the sandbox id", pause(lambda r: r.update(container_id=hex_id("x")))),
        ("pause with a writable root", pause(lambda r: r["OCI"]["Root"].update(Readonly=False))),
        (
            "pause resolv.conf writable",
            pause(lambda r: mount(r, "/etc/resolv.conf").update(options=["rbind", "rw"])),
        ),
        (
            "pause host mount",
            pause(
                lambda r: r["OCI"]["Mounts"].append(
                    {"destination": "/host", "options": ["rbind"], "source": "/", "type_": "bind"}
                )
            ),
        ),
        (
            "pause log directory of another pod",
            pause(
                lambda r: r["OCI"]["Annotations"].update(
                    {"io.kubernetes.cri.sandbox-log-directory": "/var/log/pods/x_y_" + pod.uid}
                )
            ),
        ),
        ("pause hook", pause(lambda r: r["OCI"].update(Hooks={"Poststart": [{"Path": "/x"}]}))),
    ]


def copy_attacks(s: Subject) -> list[tuple[str, dict[str, Any]]]:
    pod = s.pod
    cid = pod.cid(container_names(s)[0])
    directory = next((n for n in s.data["copy_file"]["directories"]), None)
    out = [
        ("outside the shared directory", {"file_type": "Regular", "path": "/etc/ssl/cert.pem"}),
        ("a container's root", {"file_type": "Regular", "path": f"/run/kata-containers/{cid}/rootfs/bin/sh"}),
        (
            "a guest-local emptyDir",
            {
                "file_type": "Regular",
                "path": f"{pod.shared(cid, 'x').rsplit('/', 1)[0]}/{pod.sandbox_id}/rootfs/local/cache/x",
            },
        ),
        ("an unknown name", {"file_type": "Regular", "path": pod.shared(cid, "python")}),
        ("hosts as a directory", {"file_type": "Directory", "path": pod.shared(cid, "hosts")}),
        ("below hosts", {"file_type": "Regular", "path": pod.shared(cid, "hosts") + "/x"}),
        ("unknown file type", {"file_type": "Unknown", "path": pod.shared(cid, "hosts")}),
        ("relative", {"file_type": "Regular", "path": "hosts"}),
        (
            "short container id",
            {
                "file_type": "Regular",
                "path": f"/run/kata-containers/shared/containers/{cid[:12]}-0123456789abcdef-hosts",
            },
        ),
    ]
    if directory is not None:
        top = pod.shared(cid, directory)
        out += [
            ("volume as a file", {"file_type": "Regular", "path": top}),
            ("traversal", {"file_type": "Regular", "path": top + "/../../../../etc/passwd"}),
            ("dot segment", {"file_type": "Directory", "path": top + "/a/./b"}),
            (
                "absolute symlink",
                {"file_type": "Symlink", "path": top + "/lnk", "symlink_target": "/etc/shadow"},
            ),
            ("upward symlink", {"file_type": "Symlink", "path": top + "/lnk", "symlink_target": "../../x"}),
            (
                "symlink without target",
                {"file_type": "Symlink", "path": top + "/lnk", "symlink_target": None},
            ),
            ("trailing slash", {"file_type": "Regular", "path": top + "/x/"}),
        ]
    return out


def exec_attacks(s: Subject) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    pod = s.pod
    out: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for i, name in enumerate(container_names(s)):
        state = pod.state_with(name)
        out.append((f"{name}: a shell", pod.exec_process(name, ["/bin/sh"]), state))
        for argv in s.data["containers"][i]["exec"]:

            def variant(fn: Mutation, n: str = name, a: list[str] = argv) -> dict[str, Any]:
                return mutated(pod.exec_process(n, a), fn)

            out += [
                (f"{name}: extra argument", variant(lambda r: r["process"]["Args"].append("; sh")), state),
                (
                    f"{name}: unknown container",
                    variant(lambda r: r.update(container_id=hex_id("ghost"))),
                    state,
                ),
                (f"{name}: before the container exists", variant(lambda r: None), pod.state_with()),
                (
                    f"{name}: LD_PRELOAD",
                    variant(lambda r: r["process"]["Env"].append("LD_PRELOAD=/x.so")),
                    state,
                ),
                (
                    f"{name}: TERM without a terminal",
                    variant(lambda r: r["process"]["Env"].append("TERM=xterm")),
                    state,
                ),
                (f"{name}: working directory", variant(lambda r: r["process"].update(Cwd="/tmp")), state),
                (
                    f"{name}: root",
                    variant(lambda r: r["process"]["User"].update(UID=0, GID=0, AdditionalGids=[0])),
                    state,
                ),
                (
                    f"{name}: capabilities",
                    variant(lambda r: r["process"].update(Capabilities=pod.caps(["CAP_SYS_ADMIN"]))),
                    state,
                ),
                (
                    f"{name}: string user",
                    variant(lambda r: r.update(string_user={"uid": "0", "gid": "0", "additional_gids": []})),
                    state,
                ),
                (f"{name}: SELinux", variant(lambda r: r["process"].update(SelinuxLabel="x")), state),
                (
                    f"{name}: privileges",
                    variant(
                        lambda r: r["process"].update(NoNewPrivileges=not r["process"]["NoNewPrivileges"])
                    ),
                    state,
                ),
            ]
            other = next((n for n in container_names(s) if n != name), None)
            if other is not None:
                out.append(
                    (f"{name}: its command in {other}", pod.exec_process(other, argv), pod.state_with(other))
                )
    return out


# ---- Every field


def changed(value: Any) -> Any:
    """A value of the same shape that differs from ``value``."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x" if value else "x"
    if value is None:
        return "x"
    if isinstance(value, list):
        return [*value, changed(value[-1]) if value else "x"]
    if isinstance(value, dict):
        return {**value, "x": "x"}
    raise TypeError(type(value))


MAPS = ("Annotations", "Sysctl")


def field_mutations(req: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, operation, mutated request) for every leaf, list and map of ``req``.

    Paths read ``OCI.Process.Env[3]``; keys of the maps (annotations, sysctls) are in brackets.
    """

    def walk(node: Any, path: list[Any], key: str) -> Iterator[tuple[str, str, list[Any], Any]]:
        label = _label(path)
        if isinstance(node, dict):
            if key in MAPS:
                yield label, "add", path, {**node, "x.example/key": "x"}
                for k in node:
                    yield f"{label}[{k}]", "del", path, {kk: v for kk, v in node.items() if kk != k}
            for k, v in node.items():
                yield from walk(v, [*path, (k, key in MAPS)], k)
        elif isinstance(node, list):
            yield label, "append", path, [*node, changed(node[-1]) if node else "x"]
            for i in range(len(node)):
                yield f"{label}[{i}]", "drop", path, node[:i] + node[i + 1 :]
            for i, v in enumerate(node):
                yield from walk(v, [*path, (i, True)], key)
        else:
            yield label, "change", path, changed(node)

    for label, op, path, value in list(walk(req, [], "")):
        mutated = copy.deepcopy(req)
        node = mutated
        for k, _ in path[:-1]:
            node = node[k]
        node[path[-1][0]] = value
        yield label, op, mutated


def _label(path: list[Any]) -> str:
    out = ""
    for k, bracket in path:
        out += f"[{k}]" if bracket else (f".{k}" if out else str(k))
    return out


DNS_LINES = (r"", r"nameserver [0-9a-fA-F.:]+", r"search( [A-Za-z0-9_.-]+)+", r"options( [A-Za-z0-9_:.-]+)+")

# What the policy leaves to the host, and why. (operation, path prefix) pairs; anything else is denied.
UNPINNED_CONTAINER = {
    # Identifiers and stream ports of the request itself.
    ("change", "exec_id"),
    ("change", "stdin_port"),
    ("change", "stdout_port"),
    ("change", "stderr_port"),
    # The OCI spec version string, which differs between containerd releases.
    ("change", "OCI.Version"),
    # Resource limits and placement: the host can starve a pod anyway (denial of service is out of scope).
    ("change", "OCI.Linux.CgroupsPath"),
    ("change", "OCI.Linux.Resources.CPU"),
    ("change", "OCI.Linux.Resources.Memory"),
    ("append", "OCI.Linux.Resources.HugepageLimits"),
    ("change", "OCI.Process.OOMScoreAdj"),
    ("change", "OCI.Process.ConsoleSize"),
    # More masking and read-only paths only take from the container; the required ones are pinned.
    ("append", "OCI.Linux.MaskedPaths"),
    ("append", "OCI.Linux.ReadonlyPaths"),
}


SANDBOX_PINNED_PROCESS = (
    "OCI.Process.Args",
    "OCI.Process.SelinuxLabel",
    "OCI.Process.Rlimits",
    "OCI.Process.User.Username",
)


def unpinned(kind: str, path: str, op: str, req: dict[str, Any], s: Subject) -> bool:
    """Whether the policy deliberately allows this change of a legitimate request (see UNPINNED_CONTAINER)."""
    if kind == "sandbox" and path.startswith("OCI.Process.") and not path.startswith(SANDBOX_PINNED_PROCESS):
        return True  # kata-agent replaces the pause process with the guest's own pause bundle
    if any(
        op == o and (path == p or path.startswith(p + ".") or path.startswith(p + "["))
        for o, p in UNPINNED_CONTAINER
    ):
        return True
    if path.startswith("OCI.Linux.MaskedPaths[") and op in ("change", "drop"):
        index = int(path.split("[")[1].split("]")[0])
        return req["OCI"]["Linux"]["MaskedPaths"][index] not in s.data["runtime"]["masked_paths"]
    if path.startswith("OCI.Annotations[") and op == "del":
        # Optional annotations: containerd sets them, the policy checks them when they are there.
        key = path[len("OCI.Annotations[") : -1]
        return key in {
            "io.katacontainers.pkg.oci.bundle_path",
            "io.kubernetes.cri.sandbox-uid",
            "io.kubernetes.cri.sandbox-log-directory",
            "io.kubernetes.cri.podsandbox.image-name",
            "io.kubernetes.cri.sandbox-cpu-period",
            "io.kubernetes.cri.sandbox-cpu-quota",
            "io.kubernetes.cri.sandbox-cpu-shares",
            "io.kubernetes.cri.sandbox-memory",
            "nerdctl/network-namespace",
        }
    if path.startswith(
        (
            "OCI.Annotations[io.kubernetes.cri.sandbox-cpu",
            "OCI.Annotations[io.kubernetes.cri.sandbox-memory",
            "OCI.Annotations[io.kubernetes.cri.podsandbox.image-name",
        )
    ):
        return True  # informational CRI annotations the agent does not read
    if path.startswith("OCI.Linux.Sysctl[") and op == "del":
        return path[len("OCI.Linux.Sysctl[") : -1] in s.data["runtime"]["sysctls"]
    if path.startswith("OCI.Linux.Namespaces[") and op == "drop":
        return False
    if path == "OCI.Process.Env" or path.startswith("OCI.Process.Env["):
        if op == "drop":
            index = int(path.split("[")[1].split("]")[0])
            name = req["OCI"]["Process"]["Env"][index].split("=", 1)[0]
            container = _policy_container(s, req)
            return container is not None and name not in container["env"]  # host-provided: optional
        return False
    if re.fullmatch(r"OCI\.Mounts\[[0-9]+\]", path) and op == "drop":
        index = int(path.split("[")[1].split("]")[0])
        container = _policy_container(s, req)
        wanted = (container["mounts"] if container else s.data["sandbox"]["mounts"]).values()
        dest = req["OCI"]["Mounts"][index]["destination"]
        return any(m["destination"] == dest and m["optional"] for m in wanted)
    return False


def _policy_container(s: Subject, req: dict[str, Any]) -> dict[str, Any] | None:
    name = req["OCI"]["Annotations"].get("io.kubernetes.cri.container-name")
    for c in s.data["containers"]:
        if c["name"] == name:
            return c  # type: ignore[no-any-return]
    return None


def field_cases(s: Subject) -> list[Case]:
    """Every-field mutations. The block-device variant of the rich pod differs only in its volumes."""
    pod = s.pod
    out: list[Case] = []
    only = ("storages", "OCI.Mounts") if s.pod.emptydir_mode == "block" else ("",)
    requests = [("sandbox", pod.sandbox_container(), {})]
    requests += [("container", pod.container(n), pod.state_with()) for n in container_names(s)]
    for kind, req, state in requests:
        label = req["OCI"]["Annotations"].get("io.kubernetes.cri.container-name", "sandbox")
        for path, op, mutated in field_mutations(req):
            if not path.startswith(only):
                continue
            expect = unpinned(kind, path, op, req, s)
            out.append(
                Case(
                    f"{s.key}/field/{label}/{op} {path}",
                    s.key,
                    "CreateContainerRequest",
                    mutated,
                    expect,
                    state,
                )
            )
    if only != ("",):
        return out
    for path, op, mutated in field_mutations(pod.create_sandbox()):
        # resolv.conf lines are the host's (the network is untrusted): constrained to their shapes only.
        expect = path.startswith("dns[") and (
            op == "drop"
            or (op == "change" and any(re.fullmatch(p, mutated["dns"][int(path[4:-1])]) for p in DNS_LINES))
        )
        out.append(
            Case(
                f"{s.key}/field/CreateSandboxRequest/{op} {path}",
                s.key,
                "CreateSandboxRequest",
                mutated,
                expect,
            )
        )
    for i, c in enumerate(s.data["containers"]):
        for argv in c["exec"]:
            req = pod.exec_process(c["name"], argv)
            for path, op, mutated in field_mutations(req):
                expect = path in ("exec_id", "process.OOMScoreAdj", "process.ConsoleSize", "process.Terminal")
                if path.startswith("process.Env[") and op == "drop":
                    name = req["process"]["Env"][int(path.split("[")[1].split("]")[0])].split("=", 1)[0]
                    expect = name not in c["env"]
                out.append(
                    Case(
                        f"{s.key}/field/exec {c['name']}/{op} {path}",
                        s.key,
                        "ExecProcessRequest",
                        mutated,
                        expect,
                        pod.state_with(c["name"]),
                    )
                )
        del i
    return out
