"""deploy/: every Kubernetes document validates strictly, and the wiring between files and code holds."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from contrast import subjects
from contrast.crypto.ownerkeys import (
    SEEDSHARE_OWNER_KEY_FILE,
    generate_seedshare_owner_key,
    save_private_key,
)
from contrast.generate import annotations as ann
from contrast.generate import inject
from contrast.generate.generator import Options, run
from contrast.generate.images import is_pinned
from contrast.generate.workloads import as_workload

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = kubernetes_validate.latest_version()
# Kinds of custom resource definitions: kubernetes-validate has no schema for them, so they are skipped from
# schema validation explicitly (and checked by the dedicated tests below instead). Nothing else is skipped.
NO_SCHEMA = {("keda.sh/v1alpha1", "ScaledObject"), ("kustomize.config.k8s.io/v1beta1", "Kustomization")}


def k8s_files() -> list[Path]:
    files = sorted((DEPLOY / "kubernetes").rglob("*.yaml")) + sorted((DEPLOY / "examples").rglob("*.yaml"))
    assert files
    return files


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_docs(root: Path) -> list[dict[str, Any]]:
    return [d for f in sorted(root.rglob("*.yaml")) for d in docs(f)]


def validate_strict(doc: dict[str, Any], where: str) -> None:
    if (doc.get("apiVersion"), doc.get("kind")) in NO_SCHEMA:
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{where}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}: {e.message}")


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_document_validates_strictly(path: Path) -> None:
    found = docs(path)
    assert found, f"{path} holds no document"
    for doc in found:
        validate_strict(doc, path.name)


def test_generated_output_still_validates(tmp_path: Path) -> None:
    """What users apply is generate's output: it must validate too (annotations, init containers, volumes)."""
    shutil.copytree(DEPLOY / "kubernetes", tmp_path / "kubernetes")
    shutil.copytree(DEPLOY / "examples", tmp_path / "examples")
    ws = tmp_path / "ws"
    ws.mkdir()
    # 3072 bits (the accepted minimum) instead of the default 4096: key generation dominates test time.
    save_private_key(generate_seedshare_owner_key(3072), ws / SEEDSHARE_OWNER_KEY_FILE)
    report = run(
        [tmp_path / "kubernetes", tmp_path / "examples"],
        platform="Metal-QEMU-SNP",
        workspace=ws,
        emulator_dir=ws / "emu",
        options=Options(offline=True),
    )
    assert len(report.outcome.workloads) == 6  # manifest, ca, verifier; web, api, db
    roles = {w.ref: w.coordinator_role for w in report.outcome.workloads if w.coordinator_role}
    assert roles == {
        "StatefulSet contrast-system/manifest": "manifest",
        "Deployment contrast-system/verifier": "verifier",
        "Deployment contrast-system/ca": "ca",
    }
    for doc in all_docs(tmp_path / "kubernetes") + all_docs(tmp_path / "examples"):
        validate_strict(doc, "generated")


def test_confidential_workloads_are_pinned_and_roled() -> None:
    coordinators = 0
    for doc in all_docs(DEPLOY / "kubernetes") + all_docs(DEPLOY / "examples"):
        w = as_workload(doc)
        if w is None:
            continue
        for c in w.pod_spec.get("initContainers", []) + w.pod_spec["containers"]:
            assert is_pinned(c["image"]), f"{w.ref}: {c['image']}"
            # Absolute argv[0], PATH and workingDir: pinned even where generate has no image config.
            assert c["command"][0].startswith("/"), f"{w.ref}: container {c['name']} starts a relative path"
            assert any(e["name"] == "PATH" for e in c["env"]), f"{w.ref}: container {c['name']} sets no PATH"
            assert c["workingDir"].startswith("/"), f"{w.ref}: container {c['name']} sets no workingDir"
            assert c.get("resources", {}).get("requests"), f"{w.ref}: container {c['name']} has no requests"
        if ann.role(w.obj, w.template, w.ref) == ann.ROLE_COORDINATOR:
            coordinators += 1
    assert coordinators == 3  # the manifest service, the verifier and the CA, each its own pod and policy


def test_our_services_start_as_the_dockerfile_builds_them() -> None:
    """inject and deploy/ start the service image's interpreter by absolute path, with its PATH, working
    directory and user: what deploy/Dockerfile's final stage sets, so the policy pins the real values."""
    final = (DEPLOY / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    assert f"ENV PATH={inject.SERVICE_PATH} " in final
    assert f"\nWORKDIR {inject.SERVICE_WORKDIR}\n" in final
    assert f"\nUSER {inject.SERVICE_UID}:{inject.SERVICE_UID}\n" in final
    assert "python -m venv /opt/contrast" in (DEPLOY / "Dockerfile").read_text()
    assert inject.SERVICE_PYTHON == "/opt/contrast/bin/python"
    for doc in all_docs(DEPLOY / "kubernetes") + all_docs(DEPLOY / "examples"):
        w = as_workload(doc)
        if w is None or ann.role(w.obj, w.template, w.ref) != ann.ROLE_COORDINATOR:
            continue
        pod_sc = w.pod_spec.get("securityContext") or {}
        for c in w.pod_spec["containers"]:
            sc = {**pod_sc, **(c.get("securityContext") or {})}
            assert c["command"] == inject.service_command(f"contrast.{c['name']}"), w.ref
            assert {"name": "PATH", "value": inject.SERVICE_PATH} in c["env"], w.ref
            assert c["workingDir"] == inject.SERVICE_WORKDIR, w.ref
            assert (sc["runAsUser"], sc["runAsGroup"]) == (inject.SERVICE_UID, inject.SERVICE_UID), w.ref


def by_kind(kind: str, name: str) -> dict[str, Any]:
    for doc in all_docs(DEPLOY / "kubernetes"):
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name}")


def test_nats_is_a_three_node_jetstream_cluster_on_files() -> None:
    sts = by_kind("StatefulSet", "nats")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    conf = by_kind("ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "store_dir: /data" in conf
    assert conf.count("nats-headless.contrast-system.svc.cluster.local:6222") == 3
    for svc in ("manifest", "ca", "verifier"):
        spec = by_kind("StatefulSet" if svc == "manifest" else "Deployment", svc)["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["CONTRAST_JS_REPLICAS"] == "3"  # R3 buckets and streams
        assert env["CONTRAST_NATS_URL"] == "nats://nats.contrast-system.svc.cluster.local:4222"


def test_verifier_scaling_disruption_and_probes() -> None:
    dep = by_kind("Deployment", "verifier")
    labels = dep["spec"]["selector"]["matchLabels"]
    hpa = by_kind("HorizontalPodAutoscaler", "verifier")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "verifier",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert by_kind("PodDisruptionBudget", "verifier")["spec"]["selector"]["matchLabels"] == labels
    c = dep["spec"]["template"]["spec"]["containers"][0]
    # HTTP only: the generated policy denies exec into confidential containers, so exec probes would fail.
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "exec" not in c["livenessProbe"]
    assert c["resources"]["requests"]["cpu"]


def test_keda_scaledobject_targets_the_attest_consumer() -> None:
    (so,) = docs(DEPLOY / "kubernetes" / "keda-scaledobject.yaml")
    assert so["spec"]["scaleTargetRef"]["name"] == by_kind("Deployment", "verifier")["metadata"]["name"]
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    meta = trigger["metadata"]
    consumer = subjects.verifier_consumer(subjects.DEFAULT_SOURCE)  # the deployment's only source
    assert meta["stream"] == consumer.stream.name
    assert meta["consumer"] == consumer.durable
    assert all(isinstance(v, str) for v in meta.values())  # KEDA trigger metadata is map[string]string


def test_kustomization_lists_every_manifest_but_the_optional_crd() -> None:
    (k,) = docs(DEPLOY / "kubernetes" / "kustomization.yaml")
    files = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")}
    assert set(k["resources"]) == files - {"kustomization.yaml", "keda-scaledobject.yaml"}


def test_compose_runs_every_service_from_one_image() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"nats", "manifest", "verifier", "ca", "jaeger"} <= set(services)
    for name in ("manifest", "verifier", "ca"):
        assert services[name]["command"] == inject.service_command(f"contrast.{name}")
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert services[name]["environment"]["CONTRAST_NATS_URL"] == "nats://nats:4222"
    assert "--jetstream" in services["nats"]["command"]


def test_dockerfile_pins_its_base_images() -> None:
    froms = [
        line.split()[1]
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("FROM")
    ]
    assert froms
    assert all(is_pinned(f) for f in froms)
