"""A model of the kata-agent requests that containerd, the kubelet and the Kata runtime send for a pod.

The adversarial policy suite needs the *legitimate* requests of a pod to mutate. They are built here from
the pod spec and the image config the way the real components do (Kubernetes' command/args and env rules,
containerd's defaults, the Kata runtime's guest paths), in the shapes of Kata genpolicy's own test data,
and independently of the generated policy_data: a wrong policy cannot make its own test pass.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from contrast.generate.imageconfig import ImageConfig
from contrast.generate.images import normalize

SHARED = "/run/kata-containers/shared/containers"
BUNDLES = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
CONTAINERD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINERD_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
MASKED = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
RUNTIME_SYSCTLS = {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}
POD_IP = "10.244.1.17"
SERVICE_IP = "10.96.0.1"


def hex_id(label: str, n: int = 64) -> str:
    return hashlib.sha256(label.encode()).hexdigest()[:n]


def kernel_mounts(*, container: bool) -> list[dict[str, Any]]:
    mounts = [
        {"destination": "/proc", "options": ["nosuid", "noexec", "nodev"], "source": "proc", "type_": "proc"},
        {
            "destination": "/dev",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            "source": "tmpfs",
            "type_": "tmpfs",
        },
        {
            "destination": "/dev/pts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            "source": "devpts",
            "type_": "devpts",
        },
        {
            "destination": "/dev/mqueue",
            "options": ["nosuid", "noexec", "nodev"],
            "source": "mqueue",
            "type_": "mqueue",
        },
        {
            "destination": "/sys",
            "options": ["nosuid", "noexec", "nodev", "ro"],
            "source": "sysfs",
            "type_": "sysfs",
        },
    ]
    if container:
        mounts.append(
            {
                "destination": "/sys/fs/cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
                "source": "cgroup",
                "type_": "cgroup",
            }
        )
    return mounts


def linux(sysctls: dict[str, str]) -> dict[str, Any]:
    return {
        "CgroupsPath": "kubepods-besteffort-pod.slice:cri-containerd:x",
        "Devices": [],
        "GIDMappings": [],
        "IntelRdt": None,
        "MaskedPaths": list(MASKED),
        "MountLabel": "",
        "Namespaces": [
            {"Path": "", "Type": "ipc"},
            {"Path": "", "Type": "uts"},
            {"Path": "", "Type": "mount"},
        ],
        "ReadonlyPaths": list(READONLY),
        "Resources": {
            "BlockIO": None,
            "CPU": {"Cpus": "", "Mems": "", "Period": 100000, "Quota": 0, "Shares": 2},
            "Devices": [],
            "HugepageLimits": [],
            "Memory": {"Limit": 0, "Reservation": 0, "Swap": 0},
            "Network": None,
            "Pids": None,
        },
        "RootfsPropagation": "",
        "Seccomp": None,
        "Sysctl": {**RUNTIME_SYSCTLS, **sysctls},
        "UIDMappings": [],
    }


def guest_pull(source: str, annotations: dict[str, str], cid: str) -> dict[str, Any]:
    return {
        "driver": "image_guest_pull",
        "driver_options": ["image_guest_pull=" + json.dumps({"metadata": annotations}, sort_keys=True)],
        "fs_group": None,
        "fstype": "overlay",
        "mount_point": f"/run/kata-containers/{cid}/rootfs",
        "options": [],
        "source": source,
    }


def bind(destination: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": destination, "options": options, "source": source, "type_": "bind"}


def storage(driver: str, source: str, fstype: str, mount_point: str, options: list[str]) -> dict[str, Any]:
    return {
        "driver": driver,
        "driver_options": [],
        "fs_group": None,
        "fstype": fstype,
        "mount_point": mount_point,
        "options": options,
        "source": source,
    }


S_IFMT = {"Regular": 0o100000, "Directory": 0o040000, "Symlink": 0o120000}


def copy_request(
    file_type: str, path: str, *, mode: int = 0o755, target: str | None = None
) -> dict[str, Any]:
    """kata-agent's policy view of a CopyFileRequest (PolicyCopyFileRequest)."""
    return {
        "dir_mode": 0o750,
        "file_mode": S_IFMT[file_type] | (0o777 if file_type == "Symlink" else mode),
        "file_size": len(target) if target is not None else (0 if file_type == "Directory" else 37),
        "file_type": file_type,
        "gid": 0,
        "offset": 0,
        "path": path,
        "symlink_target": target,
        "uid": 0,
    }


def _expand(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)", sub, text)


@dataclass
class Pod:
    """One running instance of a pod: its ids and the values the host fills in at run time."""

    spec: dict[str, Any]
    namespace: str
    name: str
    images: dict[str, ImageConfig] = field(default_factory=dict)  # by normalized reference
    emptydir_mode: str = "local"  # or "block": how the runtime backs disk emptyDirs
    services: tuple[str, ...] = ("api", "db")  # services in the namespace (for service links)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def sandbox_id(self) -> str:
        return hex_id(f"sandbox/{self.namespace}/{self.name}")

    @property
    def uid(self) -> str:
        h = hex_id(f"uid/{self.name}", 32)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    @property
    def hostname(self) -> str:
        return str(self.spec.get("hostname") or self.name)[:63].rstrip("-.")

    def cid(self, container: str) -> str:
        return hex_id(f"container/{self.name}/{container}")

    def shared(self, cid: str, name: str) -> str:
        return f"{SHARED}/{cid}-{hex_id(cid + name, 16)}-{name}"

    def containers(self) -> list[dict[str, Any]]:
        return [*(self.spec.get("initContainers") or []), *self.spec["containers"]]

    def container_spec(self, name: str) -> dict[str, Any]:
        for c in self.containers():
            if c["name"] == name:
                return c
        raise KeyError(name)

    # ---- CreateSandboxRequest ----

    def create_sandbox(self) -> dict[str, Any]:
        return {
            "dns": [
                f"search {self.namespace}.svc.cluster.local svc.cluster.local cluster.local",
                "nameserver 10.96.0.10",
                "options ndots:5",
                "",
            ],
            "guest_hook_path": "",
            "hostname": self.hostname,
            "kernel_modules": [],
            "sandbox_id": self.sandbox_id,
            "sandbox_pidns": False,
            "storages": [
                storage(
                    "ephemeral",
                    "shm",
                    "tmpfs",
                    "/run/kata-containers/sandbox/shm",
                    ["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"],
                )
            ],
        }

    # ---- The sandbox (pause) container ----

    def sandbox_annotations(self) -> dict[str, str]:
        sid = self.sandbox_id
        return {
            "io.katacontainers.pkg.oci.bundle_path": f"{BUNDLES}/{sid}",
            "io.katacontainers.pkg.oci.container_type": "pod_sandbox",
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.podsandbox.image-name": "registry.k8s.io/pause:3.10",
            "io.kubernetes.cri.sandbox-cpu-period": "100000",
            "io.kubernetes.cri.sandbox-cpu-quota": "0",
            "io.kubernetes.cri.sandbox-cpu-shares": "2",
            "io.kubernetes.cri.sandbox-id": sid,
            "io.kubernetes.cri.sandbox-log-directory": (
                f"/var/log/pods/{self.namespace}_{self.name}_{self.uid}"
            ),
            "io.kubernetes.cri.sandbox-memory": "0",
            "io.kubernetes.cri.sandbox-name": self.name,
            "io.kubernetes.cri.sandbox-namespace": self.namespace,
            "io.kubernetes.cri.sandbox-uid": self.uid,
            "nerdctl/network-namespace": "/var/run/netns/cni-22190131-6f68-2878-6d7b-418baf176cdf",
        }

    def sandbox_container(self) -> dict[str, Any]:
        sid = self.sandbox_id
        annotations = self.sandbox_annotations()
        mounts = kernel_mounts(container=False)
        mounts.append(bind("/dev/shm", "/run/kata-containers/sandbox/shm", ["rbind"]))
        resolv = ["rbind", "ro", "nosuid", "nodev", "noexec"]
        mounts.append(bind("/etc/resolv.conf", self.shared(sid, "resolv.conf"), resolv))
        return {
            "OCI": {
                "Annotations": annotations,
                "Hooks": None,
                "Hostname": self.hostname,
                "Linux": linux(self.pod_sysctls()),
                "Mounts": mounts,
                "Process": {
                    "ApparmorProfile": "",
                    "Args": ["/pause"],
                    "Capabilities": self.caps(CONTAINERD_CAPS),
                    "ConsoleSize": None,
                    "Cwd": "/",
                    "Env": [f"PATH={CONTAINERD_PATH}"],
                    "NoNewPrivileges": True,
                    "OOMScoreAdj": -998,
                    "Rlimits": [],
                    "SelinuxLabel": "",
                    "Terminal": False,
                    "User": {"AdditionalGids": [65535], "GID": 65535, "UID": 65535, "Username": ""},
                },
                "Root": {"Path": f"/run/kata-containers/{sid}/rootfs", "Readonly": True},
                "Solaris": None,
                "Version": "1.1.0",
                "Windows": None,
            },
            "container_id": sid,
            "devices": [],
            "exec_id": sid,
            "sandbox_pidns": False,
            "shared_mounts": [],
            "stderr_port": 0,
            "stdin_port": 0,
            "stdout_port": 0,
            "storages": [guest_pull("pause", annotations, sid)],
            "string_user": None,
        }

    def pod_sysctls(self) -> dict[str, str]:
        sc = self.spec.get("securityContext") or {}
        return {s["name"]: str(s["value"]) for s in sc.get("sysctls") or []}

    @staticmethod
    def caps(names: list[str]) -> dict[str, Any]:
        return {
            "Ambient": [],
            "Bounding": list(names),
            "Effective": list(names),
            "Inheritable": [],
            "Permitted": list(names),
        }

    # ---- Containers ----

    def image(self, c: dict[str, Any]) -> ImageConfig:
        return self.images.get(normalize(c["image"]), ImageConfig())

    def env(self, c: dict[str, Any]) -> list[str]:
        """containerd: image env, then HOSTNAME, then the kubelet's (service variables, then the pod's)."""
        out: dict[str, str] = {}
        for e in self.image(c).env:
            k, _, v = e.partition("=")
            out[k] = v
        out.setdefault("PATH", CONTAINERD_PATH)
        out["HOSTNAME"] = self.hostname
        kubelet: dict[str, str] = {}
        services = self.services if self.spec.get("enableServiceLinks", True) is not False else ()
        for svc, ip, port in [("kubernetes", SERVICE_IP, 443)] + [
            (s, f"10.96.3.{i + 10}", 8443) for i, s in enumerate(services)
        ]:
            up = svc.upper().replace("-", "_")
            kubelet[f"{up}_SERVICE_HOST"] = ip
            kubelet[f"{up}_SERVICE_PORT"] = str(port)
            kubelet[f"{up}_PORT"] = f"tcp://{ip}:{port}"
            kubelet[f"{up}_PORT_{port}_TCP"] = f"tcp://{ip}:{port}"
            kubelet[f"{up}_PORT_{port}_TCP_PROTO"] = "tcp"
            kubelet[f"{up}_PORT_{port}_TCP_PORT"] = str(port)
            kubelet[f"{up}_PORT_{port}_TCP_ADDR"] = ip
        kubelet["KUBERNETES_SERVICE_PORT_HTTPS"] = "443"
        resolved: dict[str, str] = {}
        for item in c.get("env") or []:
            if "valueFrom" in item:
                value = self.value_from(item["valueFrom"])
            else:
                value = _expand(item.get("value", ""), {**kubelet, **resolved})
            resolved[item["name"]] = value
            kubelet[item["name"]] = value
        if c.get("tty"):
            kubelet["TERM"] = "xterm"
        out.update(kubelet)
        return [f"{k}={v}" for k, v in out.items()]

    def value_from(self, source: dict[str, Any]) -> str:
        ref = source.get("fieldRef") or {}
        path = ref.get("fieldPath", "")
        values = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": "node-1.example",
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": POD_IP,
            "status.podIPs": POD_IP,
            "status.hostIP": "192.168.7.4",
            "status.hostIPs": "192.168.7.4",
        }
        if path in values:
            return values[path]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if m:
            return (self.labels if m[1] == "labels" else self.annotations).get(m[2], "v1")
        if "resourceFieldRef" in source:
            return "2"
        return "from-the-host"

    def argv(self, c: dict[str, Any]) -> list[str]:
        image = self.image(c)
        env = {e["name"]: e.get("value", "") for e in c.get("env") or [] if "value" in e}
        if c.get("command"):
            return [_expand(a, env) for a in [*c["command"], *(c.get("args") or [])]]
        if c.get("args") is not None:
            return [*image.entrypoint, *(_expand(a, env) for a in c["args"])]
        return [*image.entrypoint, *image.cmd]

    def user(self, c: dict[str, Any]) -> dict[str, Any]:
        pod_sc = self.spec.get("securityContext") or {}
        sc = c.get("securityContext") or {}
        # Kubernetes: the container's setting, else the pod's (an explicit null is no setting).
        run_as_user = sc.get("runAsUser") if sc.get("runAsUser") is not None else pod_sc.get("runAsUser")
        run_as_group = sc.get("runAsGroup") if sc.get("runAsGroup") is not None else pod_sc.get("runAsGroup")
        if run_as_user is not None:
            uid, gid = run_as_user, run_as_group or 0
        else:
            u, _, g = self.image(c).user.partition(":")
            uid, gid = int(u or 0), int(g or 0)
        groups = [gid, *(pod_sc.get("supplementalGroups") or [])]
        if pod_sc.get("fsGroup") is not None:
            groups.append(pod_sc["fsGroup"])
        return {"AdditionalGids": groups, "GID": gid, "UID": uid, "Username": ""}

    def capabilities(self, c: dict[str, Any]) -> dict[str, Any]:
        caps = list(CONTAINERD_CAPS)
        spec = (c.get("securityContext") or {}).get("capabilities") or {}
        for d in spec.get("drop") or []:
            caps = [] if d == "ALL" else [x for x in caps if x != f"CAP_{d}"]
        for a in spec.get("add") or []:
            if f"CAP_{a}" not in caps:
                caps.append(f"CAP_{a}")
        return self.caps(caps)

    def volume_index(self, name: str) -> int:
        return [v["name"] for v in self.spec.get("volumes") or []].index(name)

    def volume(self, name: str) -> dict[str, Any]:
        for v in self.spec.get("volumes") or []:
            if v["name"] == name:
                return v
        raise KeyError(name)

    def mounts_and_storages(
        self, c: dict[str, Any], cid: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """containerd's mounts for the container, with the runtime's guest paths and storages."""
        sc = c.get("securityContext") or {}
        root = "ro" if sc.get("readOnlyRootFilesystem") else "rw"
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        fsgid = [f"fsgid={fs_group}"] if fs_group else []
        mounts: list[dict[str, Any]] = []
        storages: list[dict[str, Any]] = []
        for m in c.get("volumeMounts") or []:
            vol = self.volume(m["name"])
            options = ["rbind", "rprivate", "ro" if m.get("readOnly") else "rw"]
            if "emptyDir" in vol and (vol["emptyDir"] or {}).get("medium") == "Memory":
                point = f"/run/kata-containers/sandbox/ephemeral/{m['name']}"
                storages.append(storage("ephemeral", "tmpfs", "tmpfs", point, fsgid))
            elif "emptyDir" in vol and self.emptydir_mode == "local":
                point = f"{SHARED}/{self.sandbox_id}/rootfs/local/{m['name']}"
                storages.append(storage("local", "local", "local", point, ["mode=0777", *fsgid]))
            elif "emptyDir" in vol:
                # One hot-plugged disk per volume, the same for every container that mounts it.
                source = f"{self.volume_index(m['name']) + 1:02x}/00"
                point = (
                    "/run/kata-containers/sandbox/storage/"
                    + base64.urlsafe_b64encode(source.encode()).decode()
                )
                block = storage("blk", source, "ext4", point, [])
                block.update(
                    driver_options=["encryption_key=ephemeral", "create_filesystem"],
                    fs_group={"group_change_policy": 0, "group_id": fs_group} if fs_group else None,
                    shared=True,
                )
                storages.append(block)
            else:
                if any(k in vol for k in ("configMap", "secret", "projected", "downwardAPI")):
                    options[-1] = "ro"
                point = self.shared(cid, posixpath.basename(m["mountPath"]))
            mounts.append(bind(m["mountPath"], point, options))
        termination = c.get("terminationMessagePath", "/dev/termination-log")
        mounts += [
            bind("/etc/hosts", self.shared(cid, "hosts"), ["rbind", "rprivate", "rw"]),
            bind(termination, self.shared(cid, posixpath.basename(termination)), ["rbind", "rprivate", "rw"]),
            bind("/etc/hostname", self.shared(cid, "hostname"), ["rbind", "rprivate", root]),
            bind("/etc/resolv.conf", self.shared(cid, "resolv.conf"), ["rbind", "rprivate", root]),
            bind("/dev/shm", "/run/kata-containers/sandbox/shm", ["rbind"]),
        ]
        if self.spec.get("automountServiceAccountToken") is not False:
            sa = "/var/run/secrets/kubernetes.io/serviceaccount"
            mounts.append(bind(sa, self.shared(cid, "serviceaccount"), ["rbind", "rprivate", "ro"]))
        # containerd: its default mounts, then the CRI mounts sorted by depth (a parent before its children).
        mounts = kernel_mounts(container=True) + sorted(mounts, key=lambda m: m["destination"].count("/"))
        taken = {m["destination"] for m in mounts}
        for v in self.image(c).volumes:
            if v not in taken:
                mounts.append(bind(v, self.shared(cid, posixpath.basename(v)), ["rbind", "rprivate", "rw"]))
        return mounts, storages

    def container(self, name: str) -> dict[str, Any]:
        c = self.container_spec(name)
        cid = self.cid(name)
        sc = c.get("securityContext") or {}
        image = self.image(c)
        annotations = {
            "io.katacontainers.pkg.oci.bundle_path": f"{BUNDLES}/{cid}",
            "io.katacontainers.pkg.oci.container_type": "pod_container",
            "io.kubernetes.cri.container-name": name,
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.image-name": normalize(c["image"]),
            "io.kubernetes.cri.sandbox-id": self.sandbox_id,
            "io.kubernetes.cri.sandbox-name": self.name,
            "io.kubernetes.cri.sandbox-namespace": self.namespace,
            "io.kubernetes.cri.sandbox-uid": self.uid,
        }
        mounts, storages = self.mounts_and_storages(c, cid)
        return {
            "OCI": {
                "Annotations": annotations,
                "Hooks": None,
                "Hostname": "",
                "Linux": linux(self.pod_sysctls()),
                "Mounts": mounts,
                "Process": {
                    "ApparmorProfile": "cri-containerd.apparmor.d",
                    "Args": self.argv(c),
                    "Capabilities": self.capabilities(c),
                    "ConsoleSize": None,
                    "Cwd": c.get("workingDir") or image.working_dir or "/",
                    "Env": self.env(c),
                    "NoNewPrivileges": sc.get("allowPrivilegeEscalation") is False,
                    "OOMScoreAdj": 1000,
                    "Rlimits": [],
                    "SelinuxLabel": "",
                    "Terminal": bool(c.get("tty")),
                    "User": self.user(c),
                },
                "Root": {
                    "Path": f"/run/kata-containers/{cid}/rootfs",
                    "Readonly": bool(sc.get("readOnlyRootFilesystem")),
                },
                "Solaris": None,
                "Version": "1.1.0",
                "Windows": None,
            },
            "container_id": cid,
            "devices": [],
            "exec_id": cid,
            "sandbox_pidns": bool(self.spec.get("shareProcessNamespace")),
            "shared_mounts": [],
            "stderr_port": 0,
            "stdin_port": 0,
            "stdout_port": 0,
            "storages": [guest_pull(normalize(c["image"]), annotations, cid), *storages],
            "string_user": None,
        }

    def exec_process(self, name: str, argv: list[str]) -> dict[str, Any]:
        """containerd's exec: the container's process with the exec's argv, no capabilities of its own."""
        process = copy.deepcopy(self.container(name)["OCI"]["Process"])
        process.update({"Args": list(argv), "Capabilities": None, "OOMScoreAdj": 0})
        return {
            "container_id": self.cid(name),
            "exec_id": hex_id(f"exec/{name}/{argv}", 32),
            "process": process,
            "string_user": None,
        }

    def copy_files(self) -> list[dict[str, Any]]:
        """The CopyFileRequests that put the pod's host files and volume contents into the guest.

        kata-agent's policy input for them (PolicyCopyFileRequest): the file type derived from the mode,
        and the mode, owner and sizes the runtime copied from the host's file.
        """
        out = [copy_request("Regular", self.shared(self.sandbox_id, "resolv.conf"))]
        for c in self.containers():
            cid = self.cid(c["name"])
            for m in self.container(c["name"])["OCI"]["Mounts"]:
                if not m["source"].startswith(f"{SHARED}/{cid}-"):
                    continue
                if m["destination"] in (
                    "/etc/hosts",
                    "/etc/hostname",
                    "/etc/resolv.conf",
                    c.get("terminationMessagePath", "/dev/termination-log"),
                ):
                    out.append(copy_request("Regular", m["source"]))
                else:
                    top, stamp = m["source"], m["source"] + "/..2024_05_01_10_00_00.123"
                    # With fsGroup, the kubelet makes volume directories set-group-ID.
                    out.append(copy_request("Directory", top, mode=0o2775))
                    out.append(copy_request("Directory", stamp))
                    out.append(copy_request("Regular", stamp + "/key", mode=0o644))
                    out.append(copy_request("Symlink", top + "/..data", target="..2024_05_01_10_00_00.123"))
                    out.append(copy_request("Symlink", top + "/key", target="..data/key"))
        return out

    # ---- The policy state kata-agent keeps after each allowed CreateContainerRequest ----

    def state_with_sandbox(self) -> dict[str, Any]:
        return {"sandbox": {"id": self.sandbox_id, "name": self.name, "netns": ""}}

    def state_with(self, *names: str) -> dict[str, Any]:
        state = self.state_with_sandbox()
        for n in names:
            state[self.cid(n)] = {"container": n}
        return state
