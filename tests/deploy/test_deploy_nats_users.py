"""deploy/kubernetes: the NATS server's least-privilege users are the ones the code derives, the server
accepts the configuration, and every Coordinator service connects as its own role."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from contrast import subjects
from contrast.runtime.connection import PASSWORD_ENV, USER_ENV
from contrast.runtime.natsauth import ROLES, password_env, role_users, server_config
from contrast.runtime.natsserver import find_nats_server

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
SECRET = "contrast-nats-users"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]


def nats_config() -> dict[str, str]:
    (cm,) = [d for d in docs("nats.yaml") if d["kind"] == "ConfigMap"]
    data: dict[str, str] = cm["data"]
    return data


def nats_env() -> list[dict[str, Any]]:
    (sts,) = [d for d in docs("nats.yaml") if d["kind"] == "StatefulSet"]
    env: list[dict[str, Any]] = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def test_the_users_are_the_ones_the_code_derives() -> None:
    conf = nats_config()
    assert "include ./auth.conf" in conf["nats.conf"]
    # Regenerate with `python -m contrast.runtime.natsauth` when subjects or roles change.
    assert conf["auth.conf"] == server_config(role_users(env_passwords=True))


def test_the_verifier_pulls_the_nonce_stream_of_every_initializer_user() -> None:
    """A source with a user but no nonce stream would get "no responders"; a stream without a user is dead."""
    (workload,) = [d for d in docs("verifier.yaml") if d["kind"] == "Deployment"]
    env = {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
    reference = env["CONTRAST_SOURCES"]["valueFrom"]["configMapKeyRef"]
    assert reference == {"name": "nats-config", "key": "sources"}
    users = set(re.findall(r"# role initializer\n\s+user: \"([^\"]+)\"", nats_config()["auth.conf"]))
    assert subjects.DEFAULT_SOURCE in users
    assert set(subjects.parse_sources(nats_config()["sources"])) == users


def test_every_password_comes_from_the_secret() -> None:
    referenced = set(re.findall(r"password: \$(\w+)", nats_config()["auth.conf"]))
    users = {r for r in ROLES if r != "initializer"} | {subjects.DEFAULT_SOURCE}
    assert referenced == {password_env(u) for u in users}
    provided = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in nats_env()
        if e["name"].startswith("CONTRAST_NATS_") and "valueFrom" in e
    }
    assert set(provided) == referenced
    for name, ref in provided.items():
        assert ref["name"] == SECRET
        assert name == password_env(ref["key"])


def test_each_coordinator_service_connects_as_its_role() -> None:
    for file, role in (
        ("verifier.yaml", "verifier"),
        ("ca.yaml", "ca"),
        ("manifest-service.yaml", "manifest"),
    ):
        (workload,) = [d for d in docs(file) if d["kind"] in ("Deployment", "StatefulSet")]
        env = {e["name"]: e for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env[USER_ENV]["value"] == role, file
        assert env[PASSWORD_ENV]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": role}, file


def test_the_server_accepts_the_configuration(tmp_path: Path) -> None:
    """``nats-server -t`` parses the ConfigMap as the pod sees it; without the passwords it refuses."""
    for name, text in nats_config().items():
        (tmp_path / name).write_text(text)
    env = {"POD_NAME": "nats-0", **{password_env(u.name): "x" for u in role_users(env_passwords=True)}}
    command = [find_nats_server(), "-c", str(tmp_path / "nats.conf"), "-t"]
    ok = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(command, env={"POD_NAME": "nats-0"}, capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0
    assert "can not be found" in missing.stderr


def test_keda_reads_the_backlog_where_the_users_live() -> None:
    """The ScaledObject (stream and consumer names: test_deploy_kubernetes) reads the verifier consumer's lag
    from the NATS Service's monitoring port, in the account that holds the users: the global account, since
    auth.conf defines users and no accounts."""
    (so,) = docs("keda-scaledobject.yaml")
    meta = so["spec"]["triggers"][0]["metadata"]
    assert meta["account"] == "$G"
    assert "accounts" not in nats_config()["auth.conf"]
    port = int(re.search(r"http_port: (\d+)", nats_config()["nats.conf"]).group(1))  # type: ignore[union-attr]
    assert meta["natsServerMonitoringEndpoint"] == f"nats.contrast-system.svc.cluster.local:{port}"
    (service,) = [d for d in docs("nats.yaml") if d["kind"] == "Service" and d["metadata"]["name"] == "nats"]
    assert port in {p["port"] for p in service["spec"]["ports"]}
