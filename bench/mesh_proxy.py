"""The mesh sidecar pair against stunnel and a direct loopback connection, measured side by side.

    .venv/bin/python bench/mesh_proxy.py [--bytes MiB] [--connections N] [--rounds R]

Three paths from one client to one server, all on 127.0.0.1:

- ``direct``: client → server;
- ``sidecar``: client → egress sidecar → (TLS 1.3, mutual) → ingress sidecar → server, both sidecars real
  ``python -m contrast.meshproxy`` processes (``--redirect none``: the ingress is a forward, not TPROXY);
- ``stunnel``: client → stunnel (client mode) → (TLS 1.3, mutual) → stunnel → server, Debian's stunnel4
  (installed with apt-get if missing), same certificates, same checks (chain to the mesh CA, the server's
  SAN, a client certificate required), TCP_NODELAY and no session resumption, as the sidecar.

Figures: throughput in MB/s for one stream and for 16 concurrent streams (the client sends, the server
counts and acknowledges), and connection setup latency (connect, one byte there and back, close), p50 and
p99 over sequential connections. The paths are measured in turns within each round; the best round counts
for throughput, all rounds for latency. Goals: the sidecar reaches >= 70 % of stunnel's throughput and a p99
setup latency within 2x stunnel's. The client runs in this process (threads, blocking sockets), the server
in its own; so on a small machine every path competes with the client and server for the same cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from contrast.runtime.natsserver import free_port
from contrast.testing.mesh import Generation

HEADER = struct.Struct("!Q")
SEND_CHUNK = 1 << 20
MB = 1_000_000


# ---- server (its own process): each connection sends an 8-byte length and that many bytes; it gets an ack


def _serve_connection(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = memoryview(bytearray(SEND_CHUNK))
        while True:
            head = b""
            while len(head) < HEADER.size:
                got = conn.recv(HEADER.size - len(head))
                if not got:
                    return
                head += got
            (left,) = HEADER.unpack(head)
            total = left
            while left:
                n = conn.recv_into(buf[: min(left, len(buf))])
                if n == 0:
                    return
                left -= n
            conn.sendall(HEADER.pack(total))


def serve(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=256)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_connection, args=(conn,), daemon=True).start()


# ---- client (this process) ------------------------------------------------------------------------------


def _exchange(sock: socket.socket, payload: int, chunk: memoryview) -> None:
    sock.sendall(HEADER.pack(payload))
    left = payload
    while left:
        n = min(left, len(chunk))
        sock.sendall(chunk[:n])
        left -= n
    ack = b""
    while len(ack) < HEADER.size:
        got = sock.recv(HEADER.size - len(ack))
        if not got:
            raise ConnectionError("the path closed the connection before the acknowledgement")
        ack += got
    if HEADER.unpack(ack)[0] != payload:
        raise ConnectionError("acknowledged length differs")


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def throughput(port: int, total: int, streams: int) -> float:
    """MB/s of ``total`` bytes sent over ``streams`` concurrent connections."""
    chunk = memoryview(bytes(SEND_CHUNK))
    per = total // streams
    errors: list[BaseException] = []
    socks = [_connect(port) for _ in range(streams)]
    for s in socks:  # every connection is set up (handshakes done) before the clock starts
        _exchange(s, 1, chunk)
    barrier = threading.Barrier(streams + 1)

    def one(sock: socket.socket) -> None:
        try:
            barrier.wait()
            _exchange(sock, per, chunk)
        except BaseException as e:
            errors.append(e)
        finally:
            sock.close()

    threads = [threading.Thread(target=one, args=(s,)) for s in socks]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return per * streams / elapsed / MB


def setup_latencies(port: int, count: int) -> list[float]:
    """Seconds per connection: connect, one byte there and its acknowledgement back, close."""
    chunk = memoryview(b"x")
    out = []
    for _ in range(count):
        began = time.perf_counter()
        with _connect(port) as s:
            _exchange(s, 1, chunk)
        out.append(time.perf_counter() - began)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ---- the paths --------------------------------------------------------------------------------------------


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} does not listen on {port}")


def _wait_ready(metrics_port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready")


@contextmanager
def _process(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def sidecar_path(work: Path, server: int, api: Path, web: Path) -> Iterator[int]:
    ingress, egress = free_port(), free_port()
    metrics = [free_port(), free_port()]
    base = [sys.executable, "-m", "contrast.meshproxy", "--redirect", "none", "--metrics-addr", "127.0.0.1"]
    env = {**os.environ, "CONTRAST_LOG_LEVEL": os.environ.get("CONTRAST_LOG_LEVEL", "INFO")}
    api_argv = [
        *base,
        "--tls-dir",
        str(api),
        "--ingress",
        "",
        "--forward",
        f"443@127.0.0.1:{ingress}->127.0.0.1:{server}",
        "--metrics-port",
        str(metrics[0]),
    ]
    web_argv = [
        *base,
        "--tls-dir",
        str(web),
        "--egress",
        f"bench#127.0.0.1:{egress}#api:443",
        "--resolve",
        f"api:443=127.0.0.1:{ingress}",
        "--metrics-port",
        str(metrics[1]),
    ]
    with (
        _process(api_argv, work / "sidecar-api.log", env) as a,
        _process(web_argv, work / "sidecar-web.log", env) as w,
    ):
        _wait_ready(metrics[0], a, "the ingress sidecar")
        _wait_ready(metrics[1], w, "the egress sidecar")
        yield egress


def find_stunnel() -> str:
    found = shutil.which("stunnel4") or shutil.which("stunnel")
    if found:
        return found
    print("stunnel is not installed; installing Debian's stunnel4 with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "stunnel4"], check=True)
    found = shutil.which("stunnel4") or shutil.which("stunnel")
    if not found:
        raise RuntimeError("stunnel4 was installed but is not on PATH")
    return found


def _stunnel_conf(path: Path, tls: Path, *, client: bool, accept: int, connect: int) -> Path:
    lines = [
        "foreground = yes",
        "syslog = no",  # else each line also goes to syslog, or /dev/console without one (milliseconds)
        "pid =",
        f"output = {path.with_suffix('.log')}",
        "socket = l:TCP_NODELAY=1",
        "socket = r:TCP_NODELAY=1",
        "[mesh]",
        f"client = {'yes' if client else 'no'}",
        f"accept = 127.0.0.1:{accept}",
        f"connect = 127.0.0.1:{connect}",
        f"cert = {tls / 'certChain.pem'}",
        f"key = {tls / 'key.pem'}",
        f"CAfile = {tls / 'mesh-ca.pem'}",
        "verifyChain = yes",
        "sslVersionMin = TLSv1.3",
        "sessionResume = no",
    ]
    lines += ["checkHost = api"] if client else ["requireCert = yes"]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def stunnel_path(work: Path, server: int, api: Path, web: Path) -> Iterator[int]:
    binary = find_stunnel()
    front, back = free_port(), free_port()
    srv = _stunnel_conf(work / "stunnel-api.conf", api, client=False, accept=back, connect=server)
    cli = _stunnel_conf(work / "stunnel-web.conf", web, client=True, accept=front, connect=back)
    with (
        _process([binary, str(srv)], work / "stunnel-api.out") as a,
        _process([binary, str(cli)], work / "stunnel-web.out") as w,
    ):
        _wait_port(back, a, "the server stunnel")
        _wait_port(front, w, "the client stunnel")
        yield front


@contextmanager
def direct_path(work: Path, server: int, api: Path, web: Path) -> Iterator[int]:
    yield server


PATHS: dict[str, Callable[[Path, int, Path, Path], contextlib.AbstractContextManager[int]]] = {
    "direct": direct_path,
    "sidecar": sidecar_path,
    "stunnel": stunnel_path,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bytes", type=int, default=512, help="MiB sent per throughput measurement (default 512)")
    p.add_argument(
        "--connections", type=int, default=500, help="sequential connections per round for setup latency"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    total = args.bytes << 20
    gen = Generation.new()
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        api = gen.write_pod(work / "api", ["api", "*"])
        web = gen.write_pod(work / "web", ["web", "*"])
        server_port = free_port()
        server = stack.enter_context(
            _process([sys.executable, __file__, "--serve", str(server_port)], work / "server.log")
        )
        _wait_port(server_port, server, "the server")
        ports = {name: stack.enter_context(path(work, server_port, api, web)) for name, path in PATHS.items()}
        rates: dict[tuple[str, int], list[float]] = {(n, s): [] for n in PATHS for s in args.streams}
        lat: dict[str, list[float]] = {n: [] for n in PATHS}
        for r in range(1, args.rounds + 1):
            for name, port in ports.items():
                for streams in args.streams:
                    rates[name, streams].append(throughput(port, total, streams))
                lat[name] += setup_latencies(port, args.connections)
            print(f"round {r}/{args.rounds} done", file=sys.stderr)
    print(
        f"{os.cpu_count()} CPUs; {args.bytes} MiB per throughput run; best of {args.rounds} rounds; "
        f"setup over {args.rounds * args.connections} sequential connections"
    )
    head = (
        "path      "
        + "".join(f"{f'MB/s x{s}':>12}" for s in args.streams)
        + f"{'setup p50':>12}{'setup p99':>12}"
    )
    print(head)
    for name in PATHS:
        row = "".join(f"{max(rates[name, s]):>12.0f}" for s in args.streams)
        p50, p99 = (percentile(lat[name], q) * 1e3 for q in (50, 99))
        print(f"{name:<10}{row}{p50:>10.2f}ms{p99:>10.2f}ms")
    ok = True
    for s in args.streams:
        share = max(rates["sidecar", s]) / max(rates["stunnel", s])
        good = share >= 0.70
        ok &= good
        print(f"sidecar/stunnel throughput x{s}: {share:.0%} (goal >= 70%: {'met' if good else 'MISSED'})")
    ratio = percentile(lat["sidecar"], 99) / percentile(lat["stunnel"], 99)
    ok &= ratio <= 2.0
    print(f"sidecar/stunnel setup p99: {ratio:.2f}x (goal <= 2x: {'met' if ratio <= 2.0 else 'MISSED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
