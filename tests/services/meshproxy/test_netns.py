"""Transparent redirection in network namespaces this test creates: a pod and a client joined by a veth pair.

The pod namespace gets what a confidential pod gets: the guest's default-deny rule before anything else
(``python -m contrast.meshproxy default-deny install``), an application listening on every address, and the
sidecar (``--redirect tproxy``) with Contrast's ingress configuration ``web#8081#false##metrics#9000#true``.
The client, in its own namespace, connects to the pod's address as any peer would. Checked: the pod is
closed until the sidecar has its certificates; then port 8080 needs mutual TLS, 8081 TLS without a client
certificate, 9000 passes plaintext unredirected (the application sees the client's own address); loopback
traffic inside the pod is not redirected; a connection straight to the sidecar's port is dropped (loop
prevention). Root, ``ip`` and ``iptables`` are needed; without them the test is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contrast.testing.mesh import Generation
from tests.tooling import require_root, require_tool

HERE = Path(__file__).resolve().parent
PEER = HERE / "netns_peer.py"
POD_IP, CLIENT_IP = "10.231.7.2", "10.231.7.1"
POD_IP6, CLIENT_IP6 = "fd00:231:7::2", "fd00:231:7::1"
INGRESS = "web#8081#false##metrics#9000#true"
DEADLINE = 20.0


@dataclass
class Namespaces:
    pod: str
    client: str
    ip: str

    def run(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.ip, "netns", "exec", ns, *argv], capture_output=True, text=True, check=check, timeout=60
        )

    def popen(
        self, ns: str, argv: list[str], out: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with out.open("wb") as f:
            return subprocess.Popen(
                [self.ip, "netns", "exec", ns, *argv],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def call(
        self,
        port: int,
        mode: str = "plain",
        tls_dir: Path | None = None,
        *,
        host: str = POD_IP,
        ns: str | None = None,
    ) -> dict[str, object]:
        argv = [sys.executable, str(PEER), "call", host, str(port), "--mode", mode]
        if tls_dir is not None:
            argv += ["--tls-dir", str(tls_dir)]
        answer: dict[str, object] = json.loads(self.run(ns or self.client, *argv).stdout)
        return answer


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    require_root("creating network namespaces, veth links and netfilter rules")
    ip = require_tool("ip")
    require_tool("iptables")
    tag = secrets.token_hex(3)
    pod, client = f"cmesh-pod-{tag}", f"cmesh-cli-{tag}"
    veth_pod, veth_client = f"cmp{tag}", f"cmc{tag}"

    def sh(*argv: str) -> None:
        subprocess.run([ip, *argv], check=True, capture_output=True, timeout=30)

    sh("netns", "add", pod)
    try:
        sh("netns", "add", client)
        sh("link", "add", veth_pod, "type", "veth", "peer", "name", veth_client)
        sh("link", "set", veth_pod, "netns", pod)
        sh("link", "set", veth_client, "netns", client)
        for ns, dev, addr, addr6 in (
            (pod, veth_pod, POD_IP, POD_IP6),
            (client, veth_client, CLIENT_IP, CLIENT_IP6),
        ):
            sh("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("-n", ns, "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
            sh("-n", ns, "link", "set", dev, "up")
            sh("-n", ns, "link", "set", "lo", "up")
        yield Namespaces(pod, client, ip)
    finally:
        for ns in (client, pod):  # deleting a namespace removes its veth end, addresses and netfilter rules
            subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=30)


def _log_events(path: Path) -> list[dict[str, object]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.startswith("{")]


def _wait_for(path: Path, event: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if any(e.get("event") == event for e in _log_events(path)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the sidecar exited with {proc.returncode}: {path.read_text()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {event} in {path.read_text()[-2000:]}")


def test_transparent_redirection(namespaces: Namespaces, tmp_path: Path) -> None:
    ns = namespaces
    generation = Generation.new(1)
    web = generation.write_pod(tmp_path / "web", ["web", "*"])
    foreign = Generation.new(2).write_pod(tmp_path / "foreign", ["web", "*"])
    pod_tls = tmp_path / "pod" / "tls-config"

    # The guest, before any container: the pod is closed.
    ns.run(ns.pod, sys.executable, "-m", "contrast.meshproxy", "default-deny", "install")
    app_log, sidecar_log = tmp_path / "app.log", tmp_path / "sidecar.log"
    app = ns.popen(ns.pod, [sys.executable, str(PEER), "serve", "8080", "8081", "9000"], app_log)
    env = {
        **os.environ,
        "CONTRAST_INGRESS_PROXY_CONFIG": INGRESS,
        "CONTRAST_MESH_TLS_DIR": str(pod_tls),
        "CONTRAST_MESH_RELOAD_INTERVAL": "0.1",
        "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin",
    }
    sidecar = ns.popen(ns.pod, [sys.executable, "-m", "contrast.meshproxy"], sidecar_log, env)
    try:
        _wait_for(sidecar_log, "certificates_unavailable", sidecar)
        # No certificates yet: every new inbound connection is dropped, even to the passthrough port, on
        # IPv4 and on IPv6.
        for port in (8080, 9000):
            assert ns.call(port)["error"] == "timeout"
            assert ns.call(port, host=POD_IP6)["error"] == "timeout"

        shutil.copytree(generation.write_pod(tmp_path / "api", ["api", "*"]), pod_tls)
        _wait_for(sidecar_log, "sidecar_ready", sidecar)
        assert (
            ns.run(
                ns.pod,
                "iptables",
                "-C",
                "INPUT",
                "-m",
                "conntrack",
                "!",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "DROP",
                check=False,
            ).returncode
            != 0
        )  # default deny gone
        mangle = ns.run(ns.pod, "iptables", "-t", "mangle", "-S").stdout
        assert "-A PREROUTING -p tcp -j CONTRAST_INBOUND" in mangle
        assert "--dport 8081 -j TPROXY --on-port 15007" in mangle

        # 8080: mutual TLS with a mesh certificate, and nothing else.
        assert ns.call(8080, "mtls", web)["reply"] == "app:hello\n"
        assert ns.call(8080, "plain")["reply"] == ""
        assert ns.call(8080, "tls", web)["reply"] == ""  # no client certificate
        assert ns.call(8080, "mtls", foreign)["reply"] == ""  # another CA (the client refuses it too)
        # 8081 (#false): TLS, a client certificate not required.
        assert ns.call(8081, "tls", web)["reply"] == "app:hello\n"
        assert ns.call(8081, "plain")["reply"] == ""
        # 9000 (#true): plaintext, not redirected.
        assert ns.call(9000, "plain")["reply"] == "app:hello\n"
        # Inside the pod, loopback is not redirected.
        assert ns.call(8080, "plain", host="127.0.0.1", ns=ns.pod)["reply"] == "app:hello\n"
        # Straight to the sidecar's own port: dropped, never forwarded to itself.
        assert ns.call(15006, "mtls", web)["reply"] == ""
        # IPv6 is not redirected (as in Contrast), and so it is closed, except for the passthrough port.
        assert ns.call(8080, "mtls", web, host=POD_IP6)["error"] == "ConnectionRefusedError"
        assert ns.call(9000, "plain", host=POD_IP6)["reply"] == "app:hello\n"

        seen = [json.loads(ln) for ln in app_log.read_text().splitlines()[1:]]
        assert [(s["port"], s["peer"]) for s in seen] == [
            (8080, POD_IP),  # forwarded by the sidecar (from the pod's own address)
            (8081, POD_IP),
            (9000, CLIENT_IP),  # passthrough: the client itself
            (8080, "127.0.0.1"),
            (9000, CLIENT_IP6),
        ]
        outcomes = [
            (e["reason"], e.get("target"))
            for e in _log_events(sidecar_log)
            if e["event"] == "mesh_connection"
        ]
        assert ("not_tls", f"{POD_IP}:8080") in outcomes
        assert ("no_client_certificate", f"{POD_IP}:8080") in outcomes
        assert ("untrusted", f"{POD_IP}:8080") in outcomes or ("peer_alert", f"{POD_IP}:8080") in outcomes
        assert ("loop", f"{POD_IP}:15006") in outcomes
    finally:
        for proc in (sidecar, app):
            proc.send_signal(signal.SIGTERM)
        for proc in (sidecar, app):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert sidecar.returncode == 0, sidecar_log.read_text()[-2000:]


def test_a_pod_without_a_mesh_opens_itself(namespaces: Namespaces, tmp_path: Path) -> None:
    """What generate --guest-default-deny's opener runs: the closed pod becomes reachable, and a second run
    (a restarted container) finds nothing to do."""
    ns = namespaces
    ns.run(ns.pod, sys.executable, "-m", "contrast.meshproxy", "default-deny", "install")
    app = ns.popen(ns.pod, [sys.executable, str(PEER), "serve", "8080"], tmp_path / "app.log")
    try:
        _wait_for_line(tmp_path / "app.log", app)
        assert ns.call(8080)["error"] == "timeout"
        for _ in range(2):
            ns.run(ns.pod, sys.executable, "-m", "contrast.meshproxy", "default-deny", "remove")
        assert ns.call(8080)["reply"] == "app:hello\n"
    finally:
        app.terminate()
        app.wait(10)


def _wait_for_line(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and proc.poll() is None:
        if path.read_text().strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"no output from {proc.args}")
