"""``contrast run`` end to end, driven the way a user drives it: the CLI as a subprocess.

The headless run must attest every pod, pass ``verify``, and prove mutual TLS; the test then checks the
outputs on its own (certificates against the CAs that ``verify`` wrote, policy hashes against the generated
initdata, a fresh mTLS exchange between two pods and a refused unattested client). A Ctrl-C test checks
that nothing the runner started is left running, neither after the summary nor in the middle of the run.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contrast import subjects
from contrast.cli.localrun.scenario import WORKDIR_MARKER
from contrast.crypto.ownerkeys import ensure_owner_keys
from contrast.pki.chain import verify_leaf
from contrast.pki.mesh import leaf_claims
from contrast.platform.emulated import load_snp_emulator

CONTRAST = Path(sys.executable).with_name("contrast")
POLICY_HASH = "contrast.edgeless.systems/policy-hash"
INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
RUN_TIMEOUT = 150


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Emulator state and owner keys made once (RSA-4096 takes seconds); each run gets a copy."""
    d = tmp_path_factory.mktemp("seed")
    load_snp_emulator(d / "emulator")
    ensure_owner_keys(d)
    (d / WORKDIR_MARKER).touch()  # a workdir of an earlier run: the runner may reset its subdirectories
    return d


def workdir(tmp_path: Path, seed: Path) -> Path:
    wd = tmp_path / "run"
    shutil.copytree(seed, wd)
    return wd


def command(wd: Path, *extra: str) -> list[str]:
    # The JetStream store inside the workdir: the nats-server's command line then names the workdir, so the
    # leak check below finds it like every other process of this run.
    return [str(CONTRAST), "run", "--workdir", str(wd), "--store-dir", str(wd / "nats"), *extra]


def expected_pods(deployment: Path) -> dict[str, bytes]:
    """Workload name -> SHA-256 of its initdata, read from the generated YAML by this test itself."""
    out: dict[str, bytes] = {}
    for path in sorted(deployment.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            template = ((doc or {}).get("spec") or {}).get("template") or {}
            annotations = (template.get("metadata") or {}).get("annotations") or {}
            if INITDATA not in annotations:
                continue
            digest = hashlib.sha256(gzip.decompress(base64.b64decode(annotations[INITDATA]))).digest()
            assert annotations[POLICY_HASH] == digest.hex()
            init = [c["name"] for c in template["spec"].get("initContainers", [])]
            if init[:1] == ["contrast-initializer"]:
                out[doc["metadata"]["name"]] = digest
    return out


# ---- an mTLS check of the test's own ------------------------------------------------------------------


def ping(port: int, anchor: Path, cert: Path, key: Path) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(anchor)
    ctx.load_cert_chain(cert, key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="api") as conn,
    ):
        conn.sendall(b"ping")
        return conn.recv(64)


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("web")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    c, k = directory / "intruder.pem", directory / "intruder-key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return c, k


# ---- the runs -----------------------------------------------------------------------------------------


class _OtlpReceiver(http.server.BaseHTTPRequestHandler):
    """Stands in for Jaeger's OTLP/HTTP collector: records the paths and sizes of the exports it gets."""

    received: list[tuple[str, int]] = []

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(size)
        self.received.append((self.path, size))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def otlp() -> Iterator[tuple[str, list[tuple[str, int]]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OtlpReceiver)
    _OtlpReceiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", _OtlpReceiver.received
    finally:
        server.shutdown()
        server.server_close()


def run_headless(wd: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    """A headless run that must pass; returns its output."""
    began = time.monotonic()
    proc = subprocess.run(
        command(wd, "--headless", *extra),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    print(f"headless run took {time.monotonic() - began:.1f} s")
    return proc.stdout


@pytest.fixture(scope="module")
def headless(
    tmp_path_factory: pytest.TempPathFactory, seed: Path, otlp: tuple[str, list[tuple[str, int]]]
) -> tuple[Path, str]:
    wd = workdir(tmp_path_factory.mktemp("headless"), seed)
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp[0]}
    return wd, run_headless(wd, "--verifiers", "2", env=env)


def test_otel_endpoint_passes_through_to_the_services(
    headless: tuple[Path, str], otlp: tuple[str, list[tuple[str, int]]]
) -> None:
    _, out = headless
    url, received = otlp
    assert f"exported to {url}" in out
    # Every service flushes its spans when it stops, so the runner's exit means they have arrived.
    assert [size for path, size in received if path == "/v1/traces" and size > 0], received


def test_headless_run_attests_every_pod(headless: tuple[Path, str]) -> None:
    wd, out = headless
    assert "all checks passed" in out
    pods = expected_pods(wd / "deployment")
    assert set(pods) == {"api", "db", "web"}
    mesh = x509.load_pem_x509_certificate((wd / "verify" / "mesh-ca.pem").read_bytes())
    root = x509.load_pem_x509_certificate((wd / "verify" / "coordinator-root-ca.pem").read_bytes())
    now = dt.datetime.now(dt.UTC)
    for name, policy_hash in pods.items():
        tls = wd / "pods" / name / "contrast" / "tls-config"
        leaf, intermediate = x509.load_pem_x509_certificates((tls / "certChain.pem").read_bytes())
        verify_leaf(leaf, anchor=mesh, now=now)  # chains to the mesh CA the owner verified
        verify_leaf(leaf, anchor=root, intermediates=[intermediate], now=now)
        assert leaf_claims(leaf).policy_hash == policy_hash
        assert (tls / "key.pem").stat().st_mode & 0o077 == 0
        assert re.search(rf"\b{name}\s+{policy_hash.hex()}\b", out), out  # the summary names the hash
    assert re.search(r"attestations 3 \(verifier-1 \d+, verifier-2 \d+\)", out), out
    assert "certificates issued 3" in out


def test_headless_run_is_the_kubernetes_layout_with_one_policy_per_role(headless: tuple[Path, str]) -> None:
    """deploy/kubernetes runs as generated: the manifest service, the verifier and the CA are each a pod with
    its own policy, bound to its role in the manifest; verifier and CA pin the manifest service's policy;
    each runs as its own process launched with its own policy hash, and they joined across roles (the run
    attested every pod through them)."""
    wd, out = headless
    policies = json.loads((wd / "manifest.json").read_text())["Policies"]
    hashes: dict[str, str] = {}
    env: dict[str, dict[str, str]] = {}
    for path in sorted((wd / "deployment" / "coordinator").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            template = ((doc or {}).get("spec") or {}).get("template") or {}
            if INITDATA not in (template.get("metadata") or {}).get("annotations", {}):
                continue
            (container,) = template["spec"]["containers"]
            role = container["command"][-1].removeprefix("contrast.")
            hashes[role] = template["metadata"]["annotations"][POLICY_HASH]
            env[role] = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert set(hashes) == {"manifest", "verifier", "ca"}
    assert len(set(hashes.values())) == 3
    for role, h in hashes.items():
        assert policies[h]["Role"] == "coordinator"
        assert policies[h]["CoordinatorRole"] == role
        assert re.search(rf"\b{role}\s+policy {h}\b", out), out  # the summary: launched with that hash
    for role in ("verifier", "ca"):
        assert env[role]["CONTRAST_COORDINATOR_POLICY_HASHES"] == f"manifest:{hashes['manifest']}"
    assert "CONTRAST_COORDINATOR_POLICY_HASHES" not in env["manifest"]
    assert "verifier-1, verifier-2, ca-1 joined the Coordinator" in out


def test_headless_run_verifies_the_coordinator(headless: tuple[Path, str]) -> None:
    wd, out = headless
    # `contrast verify` wrote the Coordinator's history; its only manifest is the local one, byte for byte.
    assert (wd / "verify" / "manifest.0.json").read_bytes() == (wd / "manifest.json").read_bytes()
    assert not (wd / "verify" / "manifest.1.json").exists()
    assert (wd / "seed-shares.json").stat().st_mode & 0o077 == 0
    assert "active manifest = manifest.json" in out


def test_headless_run_proves_mtls(headless: tuple[Path, str]) -> None:
    _, out = headless
    for line in (
        "mTLS          accepted web -> api (both attested)",
        "mTLS          refused  unattested client (self-signed 'web') -> api",
        "mTLS          refused  unattested client (no certificate) -> api",
        "mTLS          refused  web -> unattested server (cert for 'api' from another CA)",
    ):
        assert line in out, out


def test_headless_run_goes_through_the_mesh(headless: tuple[Path, str]) -> None:
    """web -> api between plain-TCP applications through both sidecars; the api sidecar refuses intruders."""
    wd, out = headless
    for line in (
        "mesh          accepted web app -> web sidecar -> mutual TLS -> api sidecar -> api app (plain TCP) "
        "(api app read 'GET /emojis' in plaintext)",
        "mesh          refused  unattested client (self-signed 'web') -> api sidecar "
        "(api sidecar: untrusted)",
        "mesh          refused  plaintext client -> api sidecar (api sidecar: not_tls)",
    ):
        assert line in out, out
    # The sidecars ran as processes of their own, with the configuration generate pinned into the pods.
    events = {}
    for pod in ("api", "web"):
        lines = (wd / "logs" / f"sidecar-{pod}.log").read_text().splitlines()
        events[pod] = [json.loads(ln) for ln in lines if ln.startswith("{")]
    started = {pod: next(e for e in ev if e["event"] == "sidecar_starting") for pod, ev in events.items()}
    assert started["web"]["egress"] == ["api"]
    assert started["api"]["ingress"] == []  # servicemesh-ingress: "" -- mutual TLS on every port
    refused = [
        e["reason"] for e in events["api"] if e["event"] == "mesh_connection" and e["outcome"] == "refused"
    ]
    assert sorted(refused) == ["not_tls", "untrusted"]


def test_pod_files_alone_give_mtls_and_refuse_an_intruder(headless: tuple[Path, str], tmp_path: Path) -> None:
    wd, _ = headless
    api, web = wd / "pods" / "api" / "contrast", wd / "pods" / "web" / "contrast" / "tls-config"
    tls = api / "tls-config"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls / "certChain.pem", tls / "key.pem")
    ctx.load_verify_locations(tls / "mesh-ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        outcomes: list[str] = []

        def serve(n: int) -> None:
            for _ in range(n):
                raw, _ = sock.accept()
                try:
                    with ctx.wrap_socket(raw, server_side=True) as conn:
                        conn.recv(64)
                        conn.sendall(b"pong")
                        outcomes.append("accepted")
                except (ssl.SSLError, OSError) as e:
                    outcomes.append(f"refused: {e}")
                    raw.close()

        thread = threading.Thread(target=serve, args=(2,), daemon=True)
        thread.start()
        assert ping(port, web / "mesh-ca.pem", web / "certChain.pem", web / "key.pem") == b"pong"
        cert, key = self_signed(tmp_path)
        try:
            reply = ping(port, web / "mesh-ca.pem", cert, key)
        except (ssl.SSLError, OSError):
            reply = (
                b""  # TLS 1.3: the server's refusal arrives after the client's handshake, as an error or EOF
            )
        assert reply == b""
        thread.join(10)
    assert outcomes[0] == "accepted"
    assert outcomes[1].startswith("refused")


def test_headless_run_on_a_three_node_cluster_with_per_role_users(tmp_path: Path, seed: Path) -> None:
    """``--nats-cluster 3``: the run passes on three nodes with every stream and bucket at R3, the replicas
    spread over the nodes, and the servers never refused a request of the least-privilege users."""
    wd = workdir(tmp_path, seed)
    assert "all checks passed" in run_headless(wd, "--nats-cluster", "3")
    streams = {
        # Two streams per initializer user: the default one and the example's namespace.
        *(st.name for s in (subjects.DEFAULT_SOURCE, "emojishop") for st in subjects.source_streams(s)),
        *("VERDICTS", "EVENTS"),
        *("KV_nonces", "KV_results", "KV_history", "KV_collateral"),
    }
    for node in ("n0", "n1", "n2"):
        # Each node stores its own copy of every stream (R3 on three nodes), as the server configured it.
        stored = wd / "nats" / node / "jetstream" / "$G" / "streams"
        assert {p.name for p in stored.iterdir()} == streams, node
        for stream in streams:
            assert json.loads((stored / stream / "meta.inf").read_text())["num_replicas"] == 3
        log = (wd / "nats" / node / "nats-server.log").read_text()
        assert "Violation" not in log, [line for line in log.splitlines() if "Violation" in line]
    # The services connected to different nodes (each was given every URL, its own node first).
    servers = {
        m.group(1)
        for log in (wd / "logs").glob("*-[0-9].log")
        for m in re.finditer(r'"nats_server": "([^"]+)"', log.read_text())
    }
    assert len(servers) == 3, servers


def test_a_foreign_non_empty_workdir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pods").mkdir()
    (tmp_path / "pods" / "precious.txt").write_text("not the runner's")
    proc = subprocess.run(
        [str(CONTRAST), "run", "--headless", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert "not empty" in proc.stdout
    assert (tmp_path / "pods" / "precious.txt").exists()


# ---- Ctrl-C -------------------------------------------------------------------------------------------


def leftovers(wd: Path) -> list[str]:
    """Processes (other than this test) whose command line or environment names the workdir."""
    needle = str(wd).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:200]!r}")
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run_until(wd: Path, marker: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        command(wd, "--verifiers", "1"),  # one replica fewer to start on a shared 2-core machine
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if marker in line or not line:
            break
    text = "".join(lines)
    assert marker in text, text
    return proc, text


def test_ctrl_c_after_the_summary_leaves_nothing_running(tmp_path: Path, seed: Path) -> None:
    wd = workdir(tmp_path, seed)
    proc, text = run_until(wd, "press Ctrl-C to stop")
    pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
    assert len(pids) >= 1 + 3 + 3  # nats-server, manifest, verifier, CA, 3 pods
    assert leftovers(wd), "the services should be running now"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "NATS stopped" in rest
    assert not [p for p in pids if alive(p)]
    assert leftovers(wd) == []


@pytest.mark.slow  # a third full start; the default run covers Ctrl-C after the summary
def test_ctrl_c_while_pods_attest_leaves_nothing_running(tmp_path: Path, seed: Path) -> None:
    wd = workdir(tmp_path, seed)
    proc, text = run_until(wd, "launched with policy")
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text + rest
    assert "interrupted" in rest
    assert leftovers(wd) == []


@pytest.mark.slow  # three full runs
def test_a_second_run_on_kept_state_recovers_and_a_fresh_store_keeps_the_old_share(
    tmp_path: Path, seed: Path
) -> None:
    from contrast.runtime.natsserver import embedded_nats

    def run(url: str) -> str:
        proc = subprocess.run(
            [str(CONTRAST), "run", "--headless", "--workdir", str(wd), "--nats", url],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stdout[-4000:]
        return proc.stdout

    wd = workdir(tmp_path, seed)
    with embedded_nats() as server:
        outs = [run(server.url), run(server.url)]
    assert "trust on first use" in outs[0]
    assert "recover" not in outs[0]
    # The Coordinator restarted on the kept state: stale until the seed-share owner recovers it; the same
    # deployment's manifest is active already, so the set changes nothing, and verify sees that one history.
    assert re.search(r"recover\s+replica \S+ recovered generation 1", outs[1]), outs[1]
    assert "generation 1 (unchanged" in outs[1]
    assert (wd / "verify" / "manifest.0.json").read_bytes() == (wd / "manifest.json").read_bytes()
    # A fresh store: a new first set, and the earlier deployment's seed share is moved aside, not lost.
    share = (wd / "seed-shares.json").read_bytes()
    with embedded_nats() as server:
        out = run(server.url)
    assert "trust on first use" in out
    assert "the seed shares of the earlier run moved to" in out
    assert [p.read_bytes() for p in (wd / "replaced").glob("*/seed-shares.json")] == [share]
    assert (wd / "seed-shares.json").read_bytes() != share
