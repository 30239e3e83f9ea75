"""The local runner's building blocks without NATS: the emulated host, the credential checks, the mTLS proof,
the metrics figures and the Jaeger helpers. Each check is shown to refuse what it must refuse."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contrast.cli.localrun import credentials, host, jaeger, mtls
from contrast.cli.localrun.console import Console
from contrast.cli.localrun.metrics import Figures, parse
from contrast.cli.localrun.supervisor import StepFailed, Supervisor
from contrast.errors import RequestError
from contrast.generate import annotations as ann
from contrast.generate.inject import SERVICE_PYTHON
from tests.cli.localrun.localrun_fixtures import Deployment

# ---- the emulated host --------------------------------------------------------------------------------


PINS = {"name": "CONTRAST_COORDINATOR_POLICY_HASHES", "value": f"verifier:{'ab' * 32},ca:{'cd' * 32}"}


def workload(
    name: str, namespace: str, initdata: bytes, *, stated: str | None = None, service: str = "", **extra: Any
) -> dict[str, Any]:
    """A generated workload; ``service`` makes it a Coordinator pod running that service."""
    annotations = {
        ann.KATA_INITDATA: base64.b64encode(gzip.compress(initdata)).decode(),
        ann.POLICY_HASH: stated if stated is not None else hashlib.sha256(initdata).hexdigest(),
        **extra,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "runtimeClassName": "contrast-cc",
                    "initContainers": []
                    if service
                    else [
                        {
                            "name": "contrast-initializer",
                            "image": "x",
                            "command": [SERVICE_PYTHON, "-m", "contrast.initializer"],
                            "env": [{"name": "PATH", "value": "/opt/contrast/bin"}, PINS],
                        }
                    ],
                    "containers": [
                        {
                            "name": "c",
                            "image": "y",
                            "command": [SERVICE_PYTHON, "-m", f"contrast.{service}"]
                            if service
                            else ["/bin/c"],
                        }
                    ],
                },
            }
        },
    }


def write(path: Path, *docs: Any) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs)))
    return path


def test_host_derives_the_policy_hash_from_initdata(tmp_path: Path) -> None:
    plain = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    coord = workload(
        "coordinator", "sys", b"coordinator policy", service="verifier", **{ann.POD_ROLE: "coordinator"}
    )
    write(tmp_path / "a.yaml", plain, workload("api", "shop", b"api policy"), coord)
    pods = host.discover_pods([tmp_path])
    assert [p.name for p in pods] == ["api", "coordinator"]
    assert pods[0].policy_hash == hashlib.sha256(b"api policy").digest()
    assert pods[0].initializer
    assert not pods[0].is_coordinator
    assert pods[1].is_coordinator
    assert pods[1].coordinator_role == "verifier"
    assert pods[1].launch is not None
    assert pods[1].launch.argv == (SERVICE_PYTHON, "-m", "contrast.verifier")


def test_host_starts_a_container_as_its_yaml_says() -> None:
    """The pod's own settings (its Coordinator pins) come from the YAML unchanged; the host sets only where
    things are on this machine and its emulated hardware."""
    container = {
        "name": "contrast-initializer",
        "command": [SERVICE_PYTHON, "-m", "contrast.initializer"],
        "args": ["--deadline", "9"],
        "env": [
            {"name": "PATH", "value": "/opt/contrast/bin"},
            {"name": "CONTRAST_NATS_URL", "value": "nats://nats.contrast-system.svc:4222"},
            PINS,
            {"name": "FROM_API", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    }
    launch = host.Launch.of(container, "Deployment shop/api")
    assert launch.command() == [sys.executable, "-m", "contrast.initializer", "--deadline", "9"]
    env = launch.environment(
        {"PATH": "/usr/bin", "HOME": "/root", PINS["name"]: "the machine's own value"},
        {"CONTRAST_NATS_URL": "nats://127.0.0.1:4222", "CONTRAST_EMULATED_POLICY_HASH": "00" * 32},
    )
    assert env[PINS["name"]] == PINS["value"]
    assert env["CONTRAST_NATS_URL"] == "nats://127.0.0.1:4222"
    assert env["PATH"] == "/usr/bin"  # the image's PATH is not this machine's
    assert env["HOME"] == "/root"
    assert "FROM_API" not in env  # no Kubernetes API on the emulated host
    with pytest.raises(ValueError, match="does not own"):
        launch.environment({}, {PINS["name"]: "the host may not choose the pins"})
    other = host.Launch.of({"name": "x", "command": ["/usr/bin/python3", "-m", "evil"]}, "Pod x/y")
    with pytest.raises(RequestError) as e:
        other.command()
    assert e.value.code == "request.workload_invalid"


def test_host_reads_the_sidecar_and_the_ports(tmp_path: Path) -> None:
    meshed = workload("api", "shop", b"api policy")
    spec = meshed["spec"]["template"]["spec"]
    spec["initContainers"].append({"name": "contrast-service-mesh", "image": "x", "env": []})
    spec["containers"][0]["ports"] = [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]
    write(tmp_path / "a.yaml", meshed, workload("db", "shop", b"db policy"))
    api, db = host.discover_pods([tmp_path])
    assert api.mesh == {}  # a sidecar with the default configuration (mutual TLS on every port)
    assert api.ports == (8080,)
    assert db.mesh is None
    assert db.ports == ()


def test_host_refuses_a_policy_hash_label_that_is_not_the_initdata(tmp_path: Path) -> None:
    forged = hashlib.sha256(b"another policy").hexdigest()
    write(tmp_path / "a.yaml", workload("api", "shop", b"api policy", stated=forged))
    with pytest.raises(RequestError) as e:
        host.discover_pods([tmp_path])
    assert e.value.code == "request.policy_hash_mismatch"


def test_host_refuses_a_pod_without_initdata(tmp_path: Path) -> None:
    doc = workload("api", "shop", b"p")
    del doc["spec"]["template"]["metadata"]["annotations"][ann.KATA_INITDATA]
    write(tmp_path / "a.yaml", doc)
    with pytest.raises(RequestError) as e:
        host.discover_pods([tmp_path])
    assert e.value.code == "request.initdata_missing"


def test_host_qualifies_clashing_names_by_namespace(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", workload("api", "one", b"1"), workload("api", "two", b"2"))
    assert [p.name for p in host.discover_pods([tmp_path])] == ["one-api", "two-api"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initdata=st.binary(min_size=1, max_size=512), other=st.binary(min_size=32, max_size=32))
def test_host_hash_property(tmp_path: Path, initdata: bytes, other: bytes) -> None:
    d = tmp_path / hashlib.sha256(initdata + other).hexdigest()[:12]
    d.mkdir()
    write(d / "a.yaml", workload("w", "ns", initdata))
    assert host.discover_pods([d])[0].policy_hash == hashlib.sha256(initdata).digest()
    if other != hashlib.sha256(initdata).digest():
        write(d / "a.yaml", workload("w", "ns", initdata, stated=other.hex()))
        with pytest.raises(RequestError):
            host.discover_pods([d])


# ---- credentials --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return Deployment.new()


def check(pod: Path, deployment: Deployment, policy_hash: bytes, **kw: Any) -> credentials.PodCertificate:
    args: dict[str, Any] = {
        "policy_hash": policy_hash,
        "sans": ["api", "*"],
        "workload_secret_id": "apps/v1/Deployment/shop/api",
        "mesh_ca": deployment.mesh.mesh_ca,
        "root_ca": deployment.root,
        "now": dt.datetime.now(dt.UTC),
    }
    args.update(kw)
    return credentials.check_pod(pod, **args)


def test_credentials_of_an_attested_pod_pass(tmp_path: Path, deployment: Deployment) -> None:
    ph = deployment.pod(tmp_path, "api", secret_id="apps/v1/Deployment/shop/api")
    cert = check(tmp_path, deployment, ph)
    assert cert.policy_hash == ph
    assert sorted(cert.sans) == ["*", "api"]
    assert cert.has_workload_secret


def test_credentials_from_another_deployment_are_rejected(tmp_path: Path, deployment: Deployment) -> None:
    ph = Deployment.new().pod(tmp_path, "api", secret_id="apps/v1/Deployment/shop/api")
    with pytest.raises(credentials.CredentialsRejected, match="mesh CA"):
        check(tmp_path, deployment, ph)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"policy_hash": bytes(32)}, "policy hash"),
        ({"sans": ["db", "*"]}, "SANs"),
        ({"workload_secret_id": "apps/v1/Deployment/shop/db"}, "secret ID"),
    ],
)
def test_credentials_must_match_the_manifest_entry(
    tmp_path: Path, deployment: Deployment, change: dict[str, Any], match: str
) -> None:
    ph = deployment.pod(tmp_path, "api", secret_id="apps/v1/Deployment/shop/api")
    kw = {"policy_hash": ph, **change}
    with pytest.raises(credentials.CredentialsRejected, match=match):
        check(tmp_path, deployment, **kw)


def test_a_key_readable_by_others_is_rejected(tmp_path: Path, deployment: Deployment) -> None:
    ph = deployment.pod(tmp_path, "api", secret_id="apps/v1/Deployment/shop/api")
    (tmp_path / "tls-config" / "key.pem").chmod(0o444)
    with pytest.raises(credentials.CredentialsRejected, match="readable by others"):
        check(tmp_path, deployment, ph)


def test_a_key_that_is_not_the_leafs_is_rejected(tmp_path: Path, deployment: Deployment) -> None:
    ph = deployment.pod(tmp_path / "a", "api", secret_id="apps/v1/Deployment/shop/api")
    deployment.pod(tmp_path / "b", "api", secret_id="apps/v1/Deployment/shop/api")
    key = tmp_path / "a" / "tls-config" / "key.pem"
    key.chmod(0o600)
    shutil.copyfile(tmp_path / "b" / "tls-config" / "key.pem", key)
    key.chmod(0o400)
    with pytest.raises(credentials.CredentialsRejected, match="not the private key"):
        check(tmp_path / "a", deployment, ph)


def test_a_missing_workload_secret_is_rejected(tmp_path: Path, deployment: Deployment) -> None:
    ph = deployment.pod(tmp_path, "api", secret_id="apps/v1/Deployment/shop/api")
    (tmp_path / "secrets" / "workload-secret-seed").unlink()
    with pytest.raises(credentials.CredentialsRejected, match="no secret"):
        check(tmp_path, deployment, ph)


# ---- the mTLS proof -----------------------------------------------------------------------------------


def test_mtls_within_one_mesh_and_refusal_of_outsiders(tmp_path: Path, deployment: Deployment) -> None:
    deployment.pod(tmp_path / "api", "api")
    deployment.pod(tmp_path / "web", "web")
    proof = mtls.prove("api", tmp_path / "api", "web", tmp_path / "web", tmp_path / "scratch")
    assert proof.passed, proof
    assert [e.observed for e in proof.exchanges] == ["accepted", "refused", "refused", "refused"]
    assert "web" in proof.exchanges[0].detail  # the server saw the client's SAN


def test_mtls_proof_fails_across_deployments(tmp_path: Path, deployment: Deployment) -> None:
    deployment.pod(tmp_path / "api", "api")
    Deployment.new().pod(tmp_path / "web", "web")  # attested elsewhere: not a member of this mesh
    proof = mtls.prove("api", tmp_path / "api", "web", tmp_path / "web", tmp_path / "scratch")
    assert not proof.passed
    assert proof.exchanges[0].observed == "refused"


def test_mtls_server_name_is_checked(tmp_path: Path, deployment: Deployment) -> None:
    deployment.pod(tmp_path / "api", "db")  # a mesh member, but not the host the client asked for
    deployment.pod(tmp_path / "web", "web")
    proof = mtls.prove("api", tmp_path / "api", "web", tmp_path / "web", tmp_path / "scratch")
    assert proof.exchanges[0].observed == "refused"
    assert not proof.passed


# ---- metrics ------------------------------------------------------------------------------------------

VERIFIER = """\
# TYPE contrast_ready gauge
contrast_ready 1.0
# TYPE contrast_attestation_requests counter
contrast_attestation_requests_total{tee="snp"} 3.0
# TYPE contrast_attestation_failures counter
contrast_attestation_failures_total{reason="policy.nonce_reused",tee="snp"} 1.0
# TYPE contrast_verification_seconds histogram
contrast_verification_seconds_bucket{le="+Inf"} 2.0
contrast_verification_seconds_count 2.0
contrast_verification_seconds_sum 0.03
"""
CA = """\
# TYPE contrast_ready gauge
contrast_ready 0.0
# TYPE contrast_certificates_issued counter
contrast_certificates_issued_total 2.0
"""


def test_figures_sum_over_replicas() -> None:
    f = Figures.of([parse("verifier-1", VERIFIER), parse("verifier-2", VERIFIER), parse("ca-1", CA)])
    assert f.attestations == {"verifier-1": 3.0, "verifier-2": 3.0}
    assert f.rejections == {"policy.nonce_reused": 2.0}
    assert f.verification_mean_ms == pytest.approx(15.0)
    assert f.certificates_issued == 2.0
    assert f.ready == {"verifier-1": True, "verifier-2": True, "ca-1": False}


# ---- summary ------------------------------------------------------------------------------------------


def test_summary_names_each_pod_with_its_policy_hash(tmp_path: Path, deployment: Deployment) -> None:
    from contrast.cli.localrun.summary import Outcome, PodOutcome, render

    ph = deployment.pod(tmp_path, "api", secret_id="apps/v1/Deployment/shop/api")
    cert = check(tmp_path, deployment, ph)
    pod = host.EmulatedPod(
        name="api", ref="Deployment shop/api", namespace="shop", policy_hash=ph, role="", initializer=True
    )
    skipped = host.EmulatedPod(
        name="job", ref="Job shop/job", namespace="shop", policy_hash=bytes(32), role="", initializer=False
    )
    outcome = Outcome(
        coordinator_policies={"manifest": b"\x01" * 32}, generation=1, pods=[PodOutcome(pod, 1.0, cert)]
    )
    outcome.skipped = [skipped]
    lines = render(
        outcome, "Emulated-SNP", ["manifest-1"], 3.0, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j"}
    )
    text = "\n".join(lines)
    assert f"api       {ph.hex()}  SANs api,*" in text
    assert "(no initializer: not attested)" in text
    assert "01" * 32 in text
    assert "exported to http://j" in text


# ---- --jaeger ---------------------------------------------------------------------------------------------


def test_jaeger_binary_named_built_or_none(tmp_path: Path) -> None:
    built = tmp_path / "tools" / "bin" / "jaeger"
    built.parent.mkdir(parents=True)
    built.write_text("#!/bin/sh\n")
    assert jaeger.find_jaeger({"CONTRAST_TOOLS_DIR": str(tmp_path / "tools"), "PATH": ""}) is None  # not +x
    built.chmod(0o755)
    assert jaeger.find_jaeger({"CONTRAST_TOOLS_DIR": str(tmp_path / "tools"), "PATH": ""}) == str(built)
    # A named binary wins, and is used only if it can be run: never silently another one.
    named = tmp_path / "official-jaeger"
    named.write_text("#!/bin/sh\n")
    assert (
        jaeger.find_jaeger({"CONTRAST_JAEGER": str(named), "CONTRAST_TOOLS_DIR": str(tmp_path / "tools")})
        is None
    )


async def test_run_without_a_jaeger_fails_its_step_and_exports_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRAST_JAEGER", str(tmp_path / "missing"))
    out = io.StringIO()
    sup = Supervisor(Console(out))
    with pytest.raises(StepFailed) as failed:
        await sup.start_jaeger(tmp_path / "jaeger")
    assert failed.value.step == "jaeger"
    assert "make tools" in str(failed.value)
    assert (sup.jaeger, sup.telemetry) == (None, {})


def _span(span_id: str, parent: str, name: str, process: str, start: int, **tags: Any) -> dict[str, Any]:
    refs = [{"refType": "CHILD_OF", "spanID": parent}] if parent else []
    return {
        "traceID": "t1",
        "spanID": span_id,
        "operationName": name,
        "processID": process,
        "references": refs,
        "startTime": start,
        "duration": 1500,
        "tags": [{"key": k.replace("_", "."), "value": v} for k, v in tags.items()],
    }


def test_a_trace_from_the_query_api_renders_as_a_tree() -> None:
    raw = {
        "processes": {
            "p1": {
                "serviceName": "contrast-initializer",
                "tags": [{"key": "service.instance.id", "value": "pod-a"}],
            },
            "p2": {
                "serviceName": "contrast-verifier",
                "tags": [{"key": "service.instance.id", "value": "v-1"}],
            },
        },
        "spans": [
            _span("b", "a", "publish", "p1", 20, span_kind="producer"),
            _span("c", "b", "deliver", "p2", 30, span_kind="consumer", contrast_verdict="rejected"),
            _span("a", "", "attest", "p1", 10, contrast_tee="snp"),
            _span("x", "gone", "orphan", "p2", 40),  # its parent is not in the trace: shown at the top
        ],
    }
    spans = jaeger.parse_trace(raw)
    assert [s.name for s in spans] == ["attest", "publish", "deliver", "orphan"]
    assert (spans[2].service, spans[2].replica, spans[2].kind, spans[2].parent_id) == (
        "contrast-verifier",
        "v-1",
        "consumer",
        "b",
    )
    assert jaeger.render_tree(spans, jaeger.SHOWN_ATTRIBUTES) == [
        "contrast-initializer/pod-a  attest (internal, 1.5 ms)  contrast.tee=snp",
        "  contrast-initializer/pod-a  publish (producer, 1.5 ms)",
        "    contrast-verifier/v-1  deliver (consumer, 1.5 ms)  contrast.verdict=rejected",
        "contrast-verifier/v-1  orphan (internal, 1.5 ms)",
    ]
