"""The runtime policy's data: deterministic initdata, and what generate pins or refuses for a pod spec.

What the Rego then allows and denies, request by request, is tested in test_policy_adversarial.py; here
each refusal is the pod spec that would otherwise give the host a choice.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import tomllib
from typing import Any

import hobofan_regorus as regorus
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.errors import RequestError
from contrast.generate import inject, kata
from contrast.generate import policy as pol
from contrast.generate.generator import pod_settings
from contrast.generate.imageconfig import ImageConfig
from contrast.generate.images import INITIALIZER_IMAGE, normalize
from contrast.generate.workloads import DNS_LABEL, as_workload, pod_names
from tests.generate.generate_builders import deployment, digest_image, pod_spec

APP = normalize(digest_image("app"))


def build(spec: dict[str, Any] | None = None, **kw: Any) -> pol.Policy:
    return pol.build(spec if spec is not None else pod_spec(), namespace="shop", ref="Pod shop/p", **kw)


def container(p: pol.Policy, name: str = "app") -> dict[str, Any]:
    return next(c for c in p.data["containers"] if c["name"] == name)


def with_config(config: ImageConfig, **changes: Any) -> dict[str, Any]:
    """The default pod, relying on the image config: no command, PATH or workingDir of its own."""
    spec = pod_spec()
    c = spec["containers"][0]
    for key in ("command", "args", "workingDir"):
        c.pop(key)
    c["env"] = [e for e in c["env"] if e["name"] != "PATH"]
    c.update(changes)
    return spec


def rego_text(p: pol.Policy) -> str:
    text = tomllib.loads(p.initdata.decode())["data"][pol.POLICY_KEY]
    assert isinstance(text, str)
    return text


def test_hash_is_sha256_of_initdata_and_annotation_roundtrips() -> None:
    p = build()
    assert p.hash_hex == hashlib.sha256(p.initdata).hexdigest()
    assert pol.decode_annotation(p.annotation) == p.initdata
    doc = tomllib.loads(p.initdata.decode())
    assert doc["version"] == "0.1.0"
    assert doc["algorithm"] == "sha256"
    assert set(doc["data"]) == {"policy.rego"}


def test_deterministic_and_sensitive() -> None:
    assert build().initdata == build().initdata
    assert build().annotation == build().annotation
    other = pod_spec()
    other["containers"][0]["args"] = ["--port", "8081"]
    assert build(other).hash_hex != build().hash_hex


def test_image_config_supplies_argv_env_working_directory_user_and_volumes() -> None:
    config = ImageConfig(
        entrypoint=("/usr/bin/app",),
        cmd=("--serve",),
        env=("PATH=/opt/bin:/bin", "LANG=C.UTF-8", "HOSTNAME=image", "MODE=image"),
        user="1000:2000",
        working_dir="/srv",
        volumes=("/data",),
    )
    c = container(build(with_config(config), images={APP: config}.get))
    assert c["args"] == ["/usr/bin/app", "--serve"]
    assert c["env"] == {"LANG": "C.UTF-8", "MODE": "prod", "PATH": "/opt/bin:/bin"}  # the pod's MODE wins
    assert "HOSTNAME" not in c["env"]
    assert c["host_env"]["HOSTNAME"]["kind"] == "regex"
    assert c["cwd"] == "/srv"
    assert c["user"] == {"additional_gids": [2000], "gid": 2000, "uid": 1000}
    data = c["mounts"]["/data"]
    assert data["optional"]
    assert data["kind"] == "shared"
    assert data["options"] == ["rbind", "rprivate", "rw"]
    # Not in the pod spec, so said out loud: the host fills that directory.
    assert any("VOLUME /data" in w for w in build(with_config(config), images={APP: config}.get).warnings)


@pytest.mark.parametrize(
    ("changes", "argv"),
    [
        ({"command": ["/bin/other"]}, ["/bin/other"]),  # command drops the image's cmd
        ({"args": ["--once"]}, ["/usr/bin/app", "--once"]),  # args replace it
        ({}, ["/usr/bin/app", "--serve"]),
        ({"command": ["/bin/other"], "args": ["-v"]}, ["/bin/other", "-v"]),
    ],
)
def test_command_and_args_follow_kubernetes(changes: dict[str, Any], argv: list[str]) -> None:
    config = ImageConfig(entrypoint=("/usr/bin/app",), cmd=("--serve",))
    assert container(build(with_config(config, **changes), images={APP: config}.get))["args"] == argv


def test_containerd_path_when_nobody_sets_one() -> None:
    config = ImageConfig(entrypoint=("/usr/bin/app",))
    c = container(build(with_config(config), images={APP: config}.get))
    assert c["env"]["PATH"] == kata.DEFAULT_PATH
    assert c["cwd"] == "/"


def test_host_provided_values_get_the_narrowest_shape() -> None:
    spec = pod_spec(serviceAccountName="reader")
    env = spec["containers"][0]["env"]
    for name, source in [
        ("IP", {"fieldRef": {"fieldPath": "status.podIP"}}),
        ("IPS", {"fieldRef": {"fieldPath": "status.podIPs"}}),
        ("NAME", {"fieldRef": {"fieldPath": "metadata.name"}}),
        ("NS", {"fieldRef": {"fieldPath": "metadata.namespace"}}),
        ("SA", {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}),
        ("UID", {"fieldRef": {"fieldPath": "metadata.uid"}}),
        ("TIER", {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}),
        ("OTHER", {"fieldRef": {"fieldPath": "metadata.labels['other']"}}),
        ("CPU", {"resourceFieldRef": {"resource": "limits.cpu"}}),
        ("SECRET", {"secretKeyRef": {"name": "s", "key": "k"}}),
    ]:
        env.append({"name": name, "valueFrom": source})
    settings = pol.PodSettings(pod_name_regex="^p-[0-9]+$", labels={"tier": "back.end"})
    p = build(spec, settings=settings)
    c = container(p)
    assert c["env"]["NS"] == "shop"
    assert c["env"]["SA"] == "reader"
    host = c["host_env"]
    assert host["IP"] == {"kind": "ip"}
    assert host["IPS"] == {"kind": "ips"}
    assert host["NAME"]["regex"] == "^p-[0-9]+$"
    assert host["TIER"]["regex"] == r"^back\.end$"
    assert re.fullmatch(host["UID"]["regex"], "31df313a-931f-4979-a405-cc3f3ccb6a56")
    assert not re.fullmatch(host["OTHER"]["regex"], "a b")
    assert re.fullmatch(host["CPU"]["regex"], "2")
    assert not re.fullmatch(host["CPU"]["regex"], "2; x")
    assert any("SECRET" in w and "host chooses" in w for w in p.warnings)


@pytest.mark.parametrize(
    "name",
    # The host would point PYTHONPATH at a volume it fills (a Secret, or the service-account directory, into
    # which it may copy any file) and run its module in a Python program, a Coordinator service's included.
    ["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "GCONV_PATH", "PYTHONPATH", "PYTHONWARNINGS", "NODE_OPTIONS"],
)
def test_loader_variables_never_come_from_the_host(name: str) -> None:
    spec = pod_spec()
    env = [e for e in spec["containers"][0]["env"] if e["name"] != name]
    env.append({"name": name, "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}})
    spec["containers"][0]["env"] = env
    with pytest.raises(RequestError, match="which programs"):
        build(spec)


def test_an_indexed_job_gets_its_completion_index() -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "task", "namespace": "shop"},
        "spec": {"completionMode": "Indexed", "template": {"spec": pod_spec()}},
    }
    for indexed in (True, False):
        if not indexed:
            del job["spec"]["completionMode"]
        w = as_workload(job)
        assert w is not None
        c = container(pol.build(w.pod_spec, namespace="shop", ref=w.ref, settings=pod_settings(w)))
        if indexed:
            assert re.fullmatch(c["host_env"]["JOB_COMPLETION_INDEX"]["regex"], "7")
        else:
            assert "JOB_COMPLETION_INDEX" not in c["host_env"]


def test_kubernetes_variable_expansion() -> None:
    spec = pod_spec()
    c = spec["containers"][0]
    c["env"] += [{"name": "PORT", "value": "9000"}, {"name": "ADDR", "value": ":$(PORT)"}]
    c["args"] = ["--listen", "$(ADDR)", "$$(PORT)", "$(UNKNOWN)"]
    data = container(build(spec))
    assert data["args"] == ["/bin/app", "--listen", ":9000", "$(PORT)", "$(UNKNOWN)"]
    assert data["env"]["ADDR"] == ":9000"
    c["env"].append({"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    c["args"] = ["$(IP)"]
    with pytest.raises(RequestError) as err:
        build(spec)
    assert err.value.code == "request.workload_invalid"


def test_security_context_and_kubernetes_defaults() -> None:
    plain = container(build())
    assert plain["user"] == {"additional_gids": [0], "gid": 0, "uid": 0}
    assert plain["capabilities"] == sorted(kata.DEFAULT_CAPS)
    assert plain["no_new_privileges"] is False
    assert plain["read_only_root"] is False
    spec = pod_spec(
        securityContext={
            "runAsUser": 7,
            "fsGroup": 9,
            "supplementalGroups": [11],
            "fsGroupChangePolicy": "OnRootMismatch",
        }
    )
    spec["containers"][0]["securityContext"] = {
        "runAsGroup": 8,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    }
    c = container(build(spec))
    assert c["user"] == {"additional_gids": [8, 9, 11], "gid": 8, "uid": 7}
    assert c["capabilities"] == ["NET_BIND_SERVICE"]
    assert c["no_new_privileges"] is True
    assert c["read_only_root"] is True
    mounts = c["mounts"]
    assert mounts["/etc/hostname"]["options"][-1] == "ro"
    assert mounts["/etc/hosts"]["options"][-1] == "rw"
    assert mounts["/cache"]["kind"] == "emptydir"
    assert mounts["/cache"]["local_options"] == ["mode=0777", "fsgid=9"]
    assert mounts["/cache"]["fs_group"] == {"change_policy": "OnRootMismatch", "id": 9}


def with_initializer(spec: dict[str, Any]) -> None:
    """Inject the initializer as generate does for a workload (pinned to a verifier and a CA)."""
    inject.inject(
        spec,
        image=INITIALIZER_IMAGE,
        nats_url="nats://n:4222",
        pins={inject.COORDINATOR_HASHES_ENV: f"verifier:{'ab' * 32},ca:{'cd' * 32}"},
        ref="p",
    )


def test_volumes_by_kind() -> None:
    spec = pod_spec()
    with_initializer(spec)
    spec["volumes"] += [
        {"name": "cfg", "configMap": {"name": "c"}},
        {"name": "claim", "persistentVolumeClaim": {"claimName": "x"}},
    ]
    spec["containers"][0]["volumeMounts"] += [
        {"name": "cfg", "mountPath": "/etc/cfg"},
        {"name": "claim", "mountPath": "/var/claim"},
    ]
    p = build(spec)
    mounts = container(p)["mounts"]
    assert mounts[inject.SECRETS_MOUNT_PATH]["kind"] == "ephemeral"  # guest memory, never host-shared
    assert mounts["/etc/cfg"]["kind"] == "shared"
    assert mounts["/etc/cfg"]["options"][-1] == "ro"
    assert mounts["/var/claim"]["options"][-1] == "rw"
    assert any("claim" in w for w in p.warnings)
    assert mounts[kata.SA_TOKEN_PATH]["optional"] is True
    assert mounts[kata.DEFAULT_TERMINATION_PATH] == {
        "destination": "/dev/termination-log",
        "directory": False,
        "kind": "shared",
        "name": "termination-log",
        "optional": False,
        "options": ["rbind", "rprivate", "rw"],
        "type": "bind",
    }
    # The host may copy the termination log in only as a file, volumes only as directories.
    assert p.data["copy_file"] == {
        "directories": ["cfg", "claim", "serviceaccount"],
        "files": ["hostname", "hosts", "resolv.conf", "termination-log"],
    }


def test_secrets_volume_is_guest_memory_in_the_initializer_too() -> None:
    spec = pod_spec()
    with_initializer(spec)
    init = container(build(spec), inject.INITIALIZER_NAME)
    assert init["args"] == [inject.SERVICE_PYTHON, "-m", "contrast.initializer"]
    assert init["env"]["PATH"] == inject.SERVICE_PATH
    assert init["cwd"] == inject.SERVICE_WORKDIR
    assert init["user"]["uid"] == inject.SERVICE_UID
    assert init["mounts"][inject.SECRETS_MOUNT_PATH]["kind"] == "ephemeral"


def _set(path: str, value: Any) -> Any:
    def mutate(s: dict[str, Any]) -> None:
        node: Any = s
        *parents, last = path.split(".")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
        node[last] = value

    return mutate


INVALID = "request.workload_invalid"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (_set("containers.0.image", "nginx:latest"), "request.image_not_pinned"),
        (_set("containers.0.image", "nginx@sha256:abc"), "request.image_not_pinned"),
        (_set("containers.0.command", ["python", "-m", "app"]), "request.command_not_absolute"),
        (lambda s: s["containers"][0].pop("command"), "request.image_config_missing"),
        (lambda s: s["containers"][0].pop("workingDir"), "request.image_config_missing"),
        (lambda s: s["containers"][0]["env"].pop(0), "request.image_config_missing"),
        (_set("containers.0.envFrom", [{"configMapRef": {"name": "x"}}]), INVALID),
        (_set("hostNetwork", True), INVALID),
        (_set("hostPID", True), INVALID),
        (_set("hostIPC", True), INVALID),
        (_set("hostUsers", False), INVALID),
        (_set("ephemeralContainers", [{"name": "debug", "image": "busybox"}]), INVALID),
        (_set("containers.0.securityContext", {"privileged": True}), INVALID),
        (_set("containers.0.securityContext", {"procMount": "Unmasked"}), INVALID),
        (_set("containers.0.securityContext", {"capabilities": {"add": ["ALL"]}}), INVALID),
        (_set("containers.0.securityContext", {"runAsGroup": 5}), INVALID),
        (_set("containers.0.securityContext", {"runAsNonRoot": True}), INVALID),
        (_set("containers.0.securityContext", {"seLinuxOptions": {"type": "spc_t"}}), INVALID),
        (
            _set("securityContext", {"seccompProfile": {"type": "Localhost", "localhostProfile": "x"}}),
            INVALID,
        ),
        (_set("containers.0.volumeDevices", [{"name": "d", "devicePath": "/dev/xvda"}]), INVALID),
        (lambda s: s["containers"][0]["volumeMounts"].append({"name": "nope", "mountPath": "/x"}), INVALID),
        (lambda s: s["containers"][0]["volumeMounts"][0].update(subPath="a"), INVALID),
        (lambda s: s["containers"][0]["volumeMounts"][0].update(mountPropagation="Bidirectional"), INVALID),
        (
            lambda s: s["containers"][0]["volumeMounts"].append({"name": "cache", "mountPath": "/etc/hosts"}),
            INVALID,
        ),
        (lambda s: s["volumes"].append({"name": "root", "hostPath": {"path": "/"}}), None),
        (lambda s: s["containers"].append(dict(s["containers"][0])), INVALID),
        (lambda s: s.update(volumes=[{"name": "cache", "emptyDir": {"medium": "HugePages"}}]), INVALID),
    ],
)
def test_refusals(mutate: Any, code: str | None) -> None:
    spec = pod_spec()
    mutate(spec)
    if code is None:  # an unsupported volume is refused once something mounts it
        spec["containers"][0]["volumeMounts"].append({"name": "root", "mountPath": "/host"})
        code = INVALID
    with pytest.raises(RequestError) as e:
        build(spec)
    assert e.value.code == code


@pytest.mark.parametrize("container_sc", [{}, {"runAsUser": None, "runAsNonRoot": None}])
def test_pod_security_context_applies_where_the_container_sets_nothing(container_sc: dict[str, Any]) -> None:
    """An explicit null is no setting: the pod's runAsUser holds, and with runAsNonRoot root is refused."""
    spec = pod_spec(securityContext={"runAsUser": 1000})
    spec["containers"][0]["securityContext"] = dict(container_sc)
    assert container(build(spec))["user"]["uid"] == 1000
    spec = pod_spec(securityContext={"runAsNonRoot": True})
    spec["containers"][0]["securityContext"] = dict(container_sc)
    with pytest.raises(RequestError, match="runAsNonRoot"):
        build(spec)  # the image runs as root


def test_image_user_by_name_needs_run_as_user() -> None:
    config = ImageConfig(entrypoint=("/app",), user="app")
    spec = with_config(config)
    with pytest.raises(RequestError) as e:
        build(spec, images={APP: config}.get)
    assert e.value.code == "request.user_not_numeric"
    spec["containers"][0]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 1000}
    assert container(build(spec, images={APP: config}.get))["user"]["uid"] == 1000


@pytest.mark.parametrize(
    ("command", "volume_path"),
    [
        (["/scripts/run.sh"], "/scripts"),  # the program itself comes from the host
        (["/bin/app"], "/usr/bin"),  # a directory on PATH does
        (["/bin/app"], "/usr"),
    ],
)
def test_host_supplied_code_is_refused(command: list[str], volume_path: str) -> None:
    spec = pod_spec(
        volumes=[{"name": "cache", "emptyDir": {}}, {"name": "cm", "configMap": {"name": "scripts"}}]
    )
    spec["containers"][0]["command"] = command
    spec["containers"][0]["volumeMounts"].append({"name": "cm", "mountPath": volume_path})
    with pytest.raises(RequestError) as e:
        build(spec)
    assert e.value.code == "request.host_code"


def _with_config_map(path: str, **container: Any) -> dict[str, Any]:
    spec = pod_spec(
        volumes=[{"name": "cache", "emptyDir": {}}, {"name": "cm", "configMap": {"name": "scripts"}}]
    )
    spec["containers"][0]["volumeMounts"].append({"name": "cm", "mountPath": path})
    spec["containers"][0].update(container)
    return spec


def _env(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": "PATH", "value": "/usr/bin:/bin"}, *({"name": k, "value": v} for k, v in pairs)]


@pytest.mark.parametrize(
    ("spec", "settings"),
    [
        # The termination log is a file the host writes: named like a command in a PATH directory, ...
        (
            pod_spec(containers=[{**pod_spec()["containers"][0], "terminationMessagePath": "/usr/bin/id"}]),
            None,
        ),
        # ... or as the loader's preload list.
        (
            pod_spec(
                containers=[{**pod_spec()["containers"][0], "terminationMessagePath": "/etc/ld.so.preload"}]
            ),
            None,
        ),
        (_with_config_map("/etc"), None),  # over the loader's configuration
        (_with_config_map("/usr/lib/x86_64-linux-gnu"), None),  # inside a library directory
        (_with_config_map("/opt/lib", env=_env(("LD_LIBRARY_PATH", "/opt/lib"))), None),
        (_with_config_map("/opt/hooks", env=_env(("LD_PRELOAD", "/lib/libc.so.6 /opt/hooks/x.so"))), None),
        # An empty PATH entry is the working directory, here the host's copy.
        (
            _with_config_map("/srv", env=[{"name": "PATH", "value": "/usr/bin::/bin"}], workingDir="/srv"),
            None,
        ),
        # An exec command is a program too.
        (_with_config_map("/scripts"), pol.PodSettings(exec_commands={"app": [["/scripts/ready.sh"]]})),
    ],
    ids=[
        "termination log on PATH",
        "termination log as ld.so.preload",
        "ConfigMap over /etc",
        "ConfigMap in a library directory",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "empty PATH entry",
        "exec command",
    ],
)
def test_host_supplied_files_never_hold_code(spec: dict[str, Any], settings: pol.PodSettings | None) -> None:
    with pytest.raises(RequestError) as e:
        build(spec, settings=settings)
    assert e.value.code == "request.host_code"


def test_an_image_volume_over_library_code_is_refused() -> None:
    """An image VOLUME the pod does not mount is a directory of the host's: never where libraries are."""
    config = ImageConfig(entrypoint=("/app",), env=("PATH=/usr/bin:/bin",), volumes=("/usr/local/lib",))
    with pytest.raises(RequestError) as e:
        build(with_config(config), images={APP: config}.get)
    assert e.value.code == "request.host_code"
    spec = with_config(config)
    spec["containers"][0]["volumeMounts"].append({"name": "cache", "mountPath": "/usr/local/lib"})
    assert build(spec, images={APP: config}.get)  # the pod covers it with its own emptyDir


def _python(path: str, argv: list[str], cwd: str = "/tmp", **container: Any) -> dict[str, Any]:
    """A container that runs Python (as the Coordinator's services do), with a ConfigMap at ``path``."""
    return _with_config_map(path, command=argv, args=[], workingDir=cwd, **container)


_SERVICE = [inject.SERVICE_PYTHON, "-m", "contrast.verifier"]


@pytest.mark.parametrize(
    "spec",
    [
        # python -m puts the working directory first on sys.path: the host's "contrast" package wins.
        _python("/tmp/contrast", _SERVICE),
        _python("/srv/contrast", [inject.SERVICE_PYTHON, "-Bm", "contrast.ca"], cwd="/srv"),
        # A host file named like a module the service imports.
        _python(
            "/etc/app",
            _SERVICE,
            terminationMessagePath="/tmp/asyncio.py",
        ),
        # A script's own directory comes first.
        _python("/app/lib", ["/usr/local/bin/python3.11", "-u", "/app/main.py"], cwd="/"),
        _python("/opt/plugins", _SERVICE, env=_env(("PYTHONPATH", "/opt/plugins"))),
        _python("/opt/py/extra", _SERVICE, env=_env(("PYTHONPATH", "/usr/lib/app:/opt/py"))),
        # site-packages: its .pth files run when the interpreter starts.
        _python(
            "/opt/app/.local/lib/python3.11/site-packages",
            _SERVICE,
            env=_env(("PYTHONUSERBASE", "/opt/app/.local")),
        ),
    ],
    ids=[
        "package in the working directory",
        "combined flags",
        "termination log as a module",
        "package beside the script",
        "PYTHONPATH",
        "package on PYTHONPATH",
        "user site-packages",
    ],
)
def test_python_never_imports_from_the_host(spec: dict[str, Any]) -> None:
    """For a Python program, the directories it imports from are code paths too (the Coordinator's services
    run ``python -m`` in /tmp, the initializer and the mesh sidecar as well)."""
    with pytest.raises(RequestError) as e:
        build(spec)
    assert e.value.code == "request.host_code"


def test_python_takes_host_data_where_it_imports_nothing() -> None:
    """Deeper than a module's name, or beside the import path, a host directory is data."""
    assert build(_python("/tmp/config/app", _SERVICE))
    assert build(_python("/etc/app", _SERVICE))
    assert build(_python("/app/lib", ["/usr/local/bin/python3.11", "/app/bin/main.py"], cwd="/"))


def test_host_supplied_data_beside_code_is_fine() -> None:
    """Data volumes below a PATH directory or beside the program are not searched for programs."""
    assert build(_with_config_map("/usr/bin/app-config"))
    assert build(_with_config_map("/etc/app", command=["/bin/app"]))


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("metadata.namespace", "shop|.*"),  # the namespace goes into the log directory pattern
        ("metadata.namespace", "Shop"),
        ("metadata.name", "web$"),  # a name's escaped "$" once lost its anchor in the POD_NAME pattern
        ("metadata.name", "web\nx"),
        ("metadata.name", "a" * 254),
        ("spec.template.spec.hostname", "web.example"),
    ],
)
def test_names_that_kubernetes_refuses_are_refused(where: str, value: str) -> None:
    """The policy builds patterns from the names; only names Kubernetes accepts can be pinned exactly."""
    doc = deployment()
    node: Any = doc
    *parents, last = where.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(RequestError) as e:
        as_workload(doc)
    assert e.value.code == "request.workload_invalid"


def test_pod_name_variable_keeps_its_anchors() -> None:
    spec = pod_spec()
    spec["containers"][0]["env"].append(
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    )
    assert pod_names("Pod", "web").regex == "^web$"
    p = build(spec, settings=pol.PodSettings(pod_name_regex="^web$"))
    assert container(p)["host_env"]["POD"] == {"kind": "regex", "regex": "^web$"}
    # A pattern that ends in an escaped "$" keeps it, and its own anchor after it.
    p = build(spec, settings=pol.PodSettings(pod_name_regex="^web\\$$"))
    assert container(p)["host_env"]["POD"] == {"kind": "regex", "regex": "^web\\$$"}


@pytest.mark.parametrize("path", ["/contrast/tls-config", "/contrast/secrets/workload-secret-seed"])
def test_no_host_files_inside_the_secrets_directory(path: str) -> None:
    """A ConfigMap below /contrast would show the host's files where the initializer writes the keys."""
    spec = _with_config_map(path)
    with_initializer(spec)
    with pytest.raises(RequestError, match="initializer writes"):
        build(spec)
    spec = _with_config_map("/etc/contrast")
    with_initializer(spec)
    assert build(spec)


def test_guest_private_volumes_may_sit_on_path() -> None:
    spec = pod_spec()
    spec["containers"][0]["volumeMounts"][0]["mountPath"] = "/usr/bin"  # an emptyDir: guest memory, empty
    assert container(build(spec))["env"]["PATH"] == "/usr/bin:/bin"


def test_file_and_directory_names_must_differ() -> None:
    spec = pod_spec(volumes=[{"name": "cache", "emptyDir": {}}, {"name": "cm", "configMap": {"name": "x"}}])
    spec["containers"][0]["volumeMounts"].append({"name": "cm", "mountPath": "/etc/app/termination-log"})
    with pytest.raises(RequestError, match="file and a directory"):
        build(spec)


def test_exec_commands_are_exact_and_absolute() -> None:
    p = build(settings=pol.PodSettings(exec_commands={"app": [["/bin/app", "--health"]]}))
    assert container(p)["exec"] == [["/bin/app", "--health"]]
    with pytest.raises(RequestError):
        build(settings=pol.PodSettings(exec_commands={"app": [["app"]]}))
    with pytest.raises(RequestError, match="does not have"):
        build(settings=pol.PodSettings(exec_commands={"ghost": [["/bin/true"]]}))
    spec = pod_spec()
    spec["containers"][0]["livenessProbe"] = {"exec": {"command": ["/bin/true"]}}
    assert any("exec livenessProbe" in w for w in build(spec).warnings)


def test_mutable_images_only_with_override_and_loudly() -> None:
    spec = pod_spec()
    spec["containers"][0]["image"] = "nginx:latest"
    p = build(spec, allow_mutable_images=True)
    assert any("MUTABLE" in w for w in p.warnings)
    assert container(p)["image"] == "docker.io/library/nginx:latest"


@pytest.mark.parametrize(
    ("image", "normalized"),
    [
        ("nginx@sha256:" + "a" * 64, "docker.io/library/nginx@sha256:" + "a" * 64),
        ("org/app:1@sha256:" + "a" * 64, "docker.io/org/app@sha256:" + "a" * 64),
        ("ghcr.io/org/app@sha256:" + "a" * 64, "ghcr.io/org/app@sha256:" + "a" * 64),
        ("localhost/app@sha256:" + "a" * 64, "localhost/app@sha256:" + "a" * 64),
        ("registry:5000/app@sha256:" + "a" * 64, "registry:5000/app@sha256:" + "a" * 64),
    ],
)
def test_policy_names_images_as_the_runtime_reports_them(image: str, normalized: str) -> None:
    spec = pod_spec()
    spec["containers"][0]["image"] = image
    assert container(build(spec))["image"] == normalized


@pytest.mark.parametrize(
    ("kind", "name", "pod", "other"),
    [
        ("Deployment", "web", "web-6b9d5c7f4d-x7kzq", "web-6b9d5c7f4d-x7kz"),
        ("StatefulSet", "db", "db-2", "db-x"),
        ("Pod", "one", "one", "one-1"),
        ("DaemonSet", "agent", "agent-bcd45", "agent-1"),
        ("Job", "task", "task-3-bcd45", "task--bcd45"),
        ("CronJob", "nightly", "nightly-28475920-bcd45", "nightly-bcd45"),
    ],
)
def test_pod_names_follow_the_controllers(kind: str, name: str, pod: str, other: str) -> None:
    names = pod_names(kind, name)
    assert re.fullmatch(names.regex.strip("^$"), pod)
    assert not re.fullmatch(names.regex.strip("^$"), other)
    assert names.hostname_regex(None) == names.regex
    assert names.hostname_regex("fixed") == "^fixed$"


def test_long_names_fall_back_to_a_prefix_or_any_label() -> None:
    names = pod_names("Deployment", "x" * 60)
    assert names.max_len <= 63 + 5
    assert re.fullmatch(names.regex.strip("^$"), "x" * 58 + "bcdfg")
    assert names.hostname_regex(None) == DNS_LABEL or names.max_len <= 63


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
def test_toml_string_roundtrips_anything(s: str) -> None:
    doc = tomllib.loads(f"x = {pol._toml_string(s)}\n")
    assert doc["x"] == s


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_any_env_value_gives_valid_initdata(value: str) -> None:
    spec = pod_spec()
    spec["containers"][0]["env"].append({"name": "V", "value": value.replace("\x00", "")})
    p = build(spec)
    e = regorus.Engine()
    e.add_policy("policy.rego", rego_text(p))
    assert e.eval_rule("data.agent_policy.ExecProcessRequest") is False


def test_decode_annotation_bounds() -> None:
    bomb = base64.b64encode(gzip.compress(b"\0" * (5 * 1024 * 1024), mtime=0)).decode()
    with pytest.raises(RequestError):
        pol.decode_annotation(bomb)
    with pytest.raises(RequestError):
        pol.decode_annotation("not base64!")
