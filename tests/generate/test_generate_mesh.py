"""`contrast generate` and the service mesh: annotations become a sidecar that the pod's policy pins."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from contrast.errors import RequestError
from contrast.generate import annotations as ann
from contrast.generate import mesh
from contrast.generate import policy as pol
from contrast.generate.generator import Options, Outcome, process
from contrast.generate.images import INITIALIZER_IMAGE
from contrast.generate.inject import (
    INITIALIZER_NAME,
    SECRETS_MOUNT_PATH,
    SECRETS_VOLUME,
    SERVICE_PATH,
    SERVICE_WORKDIR,
    service_command,
)
from contrast.generate.policy import decode_annotation
from contrast.generate.yamldocs import Document, YamlFile
from contrast.mesh.config import parse
from tests.generate.generate_builders import coordinator, deployment
from tests.generate.policy_engines import rego_of

INGRESS = "contrast.edgeless.systems/servicemesh-ingress"
EGRESS = "contrast.edgeless.systems/servicemesh-egress"
ADMIN = "contrast.edgeless.systems/servicemesh-admin-interface-port"
VERIFY_SAN = "contrast.edgeless.systems/servicemesh-egress-verify-san"


def annotated(annotations: dict[str, str], *, on_template: bool = True, **kw: Any) -> dict[str, Any]:
    d = deployment("web", **kw)
    meta = d["spec"]["template"]["metadata"] if on_template else d["metadata"]
    meta["annotations"] = {**meta.get("annotations", {}), **annotations}
    return d


def generated(doc: dict[str, Any]) -> tuple[dict[str, Any], Outcome]:
    f = YamlFile(path=Path("a.yaml"), documents=[Document(text="", data=doc)])
    out = process([f], Options())
    return f.documents[0].data, out


def init_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["initContainers"]
    return containers


def test_annotations_become_the_pinned_sidecar() -> None:
    doc, out = generated(
        annotated(
            {
                INGRESS: "web#8080#false##metrics#7890#true",
                EGRESS: "api#127.137.0.1:8080#api:8080",
                ADMIN: "9901",
            }
        )
    )
    first, sidecar = init_containers(doc)
    assert (
        first["name"] == INITIALIZER_NAME
    )  # the initializer writes the credentials before the sidecar starts
    assert sidecar["name"] == mesh.SIDECAR_NAME
    assert sidecar["image"] == INITIALIZER_IMAGE
    # An absolute interpreter, PATH and working directory: the policy pins them without the image config.
    assert sidecar["command"] == ["/opt/contrast/bin/python", "-m", "contrast.meshproxy"]
    assert sidecar["workingDir"] == SERVICE_WORKDIR
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"]}
    assert sidecar["securityContext"]["runAsUser"] == 0
    assert sidecar["ports"] == [{"name": "contrast-admin", "containerPort": 9901}]
    assert {"name": SECRETS_VOLUME, "mountPath": SECRETS_MOUNT_PATH} in sidecar["volumeMounts"]
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env == {
        "PATH": SERVICE_PATH,
        "CONTRAST_INGRESS_PROXY_CONFIG": "web#8080#false##metrics#7890#true",
        "CONTRAST_EGRESS_PROXY_CONFIG": "api#127.137.0.1:8080#api:8080",
        "CONTRAST_ADMIN_PORT": "9901",
    }
    # The pod's policy document names the sidecar, its command and its whole configuration (the policy's
    # exact format is the policy generator's; that it pins every container is tested there).
    (initdata,) = out.documents.values()
    assert initdata == decode_annotation(
        doc["spec"]["template"]["metadata"]["annotations"][ann.KATA_INITDATA]
    )
    for pinned in (mesh.SIDECAR_NAME, "contrast.meshproxy", *env, *env.values()):
        assert pinned.encode() in initdata


def test_the_policy_pins_the_sidecar_as_root_with_net_admin() -> None:
    """The sidecar's launch inputs are in the policy data like any container's: argv, environment (its
    configuration), root, NET_ADMIN on top of the runtime's defaults, the secrets mount. What the adversarial
    suite (tests/generate/test_policy_adversarial.py) then proves on the emojishop's meshed pods."""
    _, out = generated(annotated({INGRESS: "", EGRESS: "api#127.137.0.1:8080#api:8080"}))
    (initdata,) = out.documents.values()
    rego = rego_of(pol.Policy(initdata=initdata, data={}))
    data = json.loads(rego.split("\npolicy_data := ", 1)[1])
    by_name = {c["name"]: c for c in data["containers"]}
    sidecar = by_name[mesh.SIDECAR_NAME]
    assert [c["name"] for c in data["containers"]][:2] == [INITIALIZER_NAME, mesh.SIDECAR_NAME]
    assert sidecar["init"] is True
    assert sidecar["args"] == service_command("contrast.meshproxy")
    assert sidecar["cwd"] == SERVICE_WORKDIR
    assert sidecar["env"] == {
        "PATH": SERVICE_PATH,
        "CONTRAST_EGRESS_PROXY_CONFIG": "api#127.137.0.1:8080#api:8080",
    }
    assert sidecar["user"]["uid"] == 0
    assert "NET_ADMIN" in sidecar["capabilities"]
    (app,) = [c for c in data["containers"] if not c["init"]]
    assert "NET_ADMIN" not in app["capabilities"]  # the application container stays without it
    assert SECRETS_MOUNT_PATH in sidecar["mounts"]


def test_the_configuration_is_part_of_the_policy_hash() -> None:
    a, _ = generated(annotated({EGRESS: "api#127.137.0.1:8080#api:8080"}))
    b, _ = generated(annotated({EGRESS: "api#127.137.0.1:8080#evil:8080"}))
    hash_a = a["spec"]["template"]["metadata"]["annotations"][ann.POLICY_HASH]
    hash_b = b["spec"]["template"]["metadata"]["annotations"][ann.POLICY_HASH]
    assert hash_a != hash_b


def test_empty_ingress_is_mutual_tls_and_sets_no_variable() -> None:
    doc, _ = generated(annotated({INGRESS: ""}, on_template=False))
    sidecar = init_containers(doc)[-1]
    # The sidecar's default, mutual TLS on every port: no mesh variable at all.
    assert sidecar["env"] == [{"name": "PATH", "value": SERVICE_PATH}]
    assert parse(None, None, None).ingress == parse("", None, None).ingress


def test_disabled_ingress_and_the_san_check_switch() -> None:
    doc, _ = generated(
        annotated({INGRESS: "DISABLED", EGRESS: "db#127.0.0.2:5432#db:5432", VERIFY_SAN: "false"})
    )
    env = {e["name"]: e["value"] for e in init_containers(doc)[-1]["env"]}
    assert env["CONTRAST_INGRESS_PROXY_CONFIG"] == "DISABLED"
    assert env["CONTRAST_EGRESS_VERIFY_SAN"] == "false"


def test_no_annotation_no_sidecar() -> None:
    doc, _ = generated(annotated({VERIFY_SAN: "false"}))  # not an opt-in on its own
    assert [c["name"] for c in init_containers(doc)] == [INITIALIZER_NAME]


def test_generate_twice_is_stable() -> None:
    doc, _ = generated(annotated({EGRESS: "api#127.137.0.1:8080#api:8080"}))
    again, _ = generated(copy.deepcopy(doc))
    assert again == doc
    assert [c["name"] for c in init_containers(again)] == [INITIALIZER_NAME, mesh.SIDECAR_NAME]


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({EGRESS: ""}, "must not be empty"),
        ({EGRESS: "api#10.0.0.1:8080#api:8080"}, "not in 127.0.0.0/8"),
        ({INGRESS: "web#8080#maybe"}, "disableTLS"),
        ({INGRESS: "web#http#false"}, "not a port"),
        ({ADMIN: "admin"}, "not a port"),
        ({EGRESS: "api#127.0.0.1:80#api:80", VERIFY_SAN: "off"}, "true or false"),
    ],
)
def test_refused(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(RequestError, match=message) as info:
        generated(annotated(annotations))
    assert info.value.code == "request.annotation_invalid"


def test_a_mesh_needs_the_initializer() -> None:
    doc = annotated({EGRESS: "api#127.137.0.1:8080#api:8080", ann.SKIP_INITIALIZER: "true"})
    with pytest.raises(RequestError, match="no initializer"):
        generated(doc)


def test_on_a_closing_guest_pods_without_a_mesh_get_the_opener() -> None:
    """With --guest-default-deny, every pod without the sidecar (the Coordinator too) opens itself; a meshed
    pod is opened by its sidecar only, once it is ready."""
    docs = [deployment("db"), coordinator("manifest"), annotated({EGRESS: "api#127.137.0.1:8080#api:8080"})]
    files = [
        YamlFile(path=Path(f"{i}.yaml"), documents=[Document(text="", data=d)]) for i, d in enumerate(docs)
    ]
    process(files, Options(guest_default_deny=True))
    names = [[c["name"] for c in init_containers(f.documents[0].data)] for f in files]
    assert names == [
        [INITIALIZER_NAME, mesh.OPENER_NAME],
        [mesh.OPENER_NAME],
        [INITIALIZER_NAME, mesh.SIDECAR_NAME],
    ]
    opener = init_containers(files[0].documents[0].data)[-1]
    assert opener["command"] == [*service_command("contrast.meshproxy"), "default-deny", "remove"]
    assert opener["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"]}
    again = [
        YamlFile(path=f.path, documents=[Document(text="", data=copy.deepcopy(f.documents[0].data))])
        for f in files
    ]
    process(again, Options(guest_default_deny=True))
    assert [f.documents[0].data for f in again] == [f.documents[0].data for f in files]


def test_without_a_closing_guest_no_opener() -> None:
    doc, _ = generated(deployment("db"))
    assert [c["name"] for c in init_containers(doc)] == [INITIALIZER_NAME]


def test_sidecar_and_opener_validate_strictly() -> None:
    meshed, _ = generated(annotated({INGRESS: "", EGRESS: "api#127.137.0.1:8080#api:8080", ADMIN: "9901"}))
    f = YamlFile(path=Path("db.yaml"), documents=[Document(text="", data=deployment("db"))])
    process([f], Options(guest_default_deny=True))
    for doc in (meshed, f.documents[0].data):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
