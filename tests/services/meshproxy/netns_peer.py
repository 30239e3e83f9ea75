"""Processes of the network-namespace test, run with ``ip netns exec``: an application and a client.

``serve PORT...``: a plain-TCP application on every address (IPv4 and IPv6); for each connection it reads a
line, answers ``app:<line>`` and prints one JSON line (port, peer address, data) to stdout.

``call HOST PORT --mode plain|tls|mtls [--tls-dir DIR]``: one request (``hello``), prints a JSON line with
whether it connected, the answer and the error. ``tls`` sends no client certificate; both TLS modes trust
only the mesh CA of DIR and expect the server's certificate to name ``api``.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import threading
from pathlib import Path

TIMEOUT = 3.0


def _handle(conn: socket.socket, port: int, peer: str, lock: threading.Lock) -> None:
    with conn:
        conn.settimeout(TIMEOUT)
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(b"app:" + data)
        except OSError:
            pass
    with lock:
        print(json.dumps({"port": port, "peer": peer, "data": data.decode(errors="replace")}), flush=True)


def serve(ports: list[int]) -> None:
    lock = threading.Lock()

    def accept(port: int) -> None:
        listener = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
        while True:
            conn, addr = listener.accept()
            peer = str(addr[0]).removeprefix("::ffff:")  # an IPv4 peer of the dual-stack socket
            threading.Thread(target=_handle, args=(conn, port, peer, lock), daemon=True).start()

    for port in ports:
        threading.Thread(target=accept, args=(port,), daemon=True).start()
    print(json.dumps({"listening": ports}), flush=True)
    threading.Event().wait()


def call(host: str, port: int, mode: str, tls_dir: Path | None) -> dict[str, object]:
    out: dict[str, object] = {"connected": False, "reply": "", "error": ""}
    try:
        raw = socket.create_connection((host, port), timeout=TIMEOUT)
    except OSError as e:
        out["error"] = "timeout" if isinstance(e, TimeoutError) else type(e).__name__
        return out
    out["connected"] = True
    sock: socket.socket = raw
    try:
        if mode != "plain":
            assert tls_dir is not None
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.load_verify_locations(tls_dir / "mesh-ca.pem")
            if mode == "mtls":
                ctx.load_cert_chain(tls_dir / "certChain.pem", tls_dir / "key.pem")
            sock = ctx.wrap_socket(raw, server_hostname="api")
        sock.sendall(b"hello\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        out["reply"] = reply.decode(errors="replace")
    except (OSError, ssl.SSLError) as e:
        out["error"] = str(getattr(e, "reason", None) or type(e).__name__)
    finally:
        sock.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("ports", type=int, nargs="+")
    c = sub.add_parser("call")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--mode", choices=["plain", "tls", "mtls"], default="plain")
    c.add_argument("--tls-dir", type=Path)
    args = p.parse_args()
    if args.command == "serve":
        serve(args.ports)
        return 0
    print(json.dumps(call(args.host, args.port, args.mode, args.tls_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
