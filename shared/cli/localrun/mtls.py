"""Proof that the issued certificates work: mutual TLS between attested pods, and refusal of everyone else.

Each pod uses only its initializer's files: ``tls-config/certChain.pem`` and ``key.pem`` as its identity,
``tls-config/mesh-ca.pem`` as the only trust anchor (TLS 1.3, peer certificate required on both sides, host
name checked against the server's SAN). Unattested parties get credentials that look right but lack the
attestation: a self-signed certificate, a certificate from another CA with the same names, or none at all.

Blocking sockets on 127.0.0.1, as the example app's servers use; call :func:`prove` off the event loop.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

IO_TIMEOUT = 5.0
MAX_LINE = 1024


@dataclass(frozen=True)
class TlsFiles:
    cert_chain: Path
    key: Path
    trust_anchor: Path | None  # None: trusts nobody (an attacker who accepts anything)

    @classmethod
    def of_pod(cls, contrast_dir: Path) -> TlsFiles:
        tls = contrast_dir / "tls-config"
        return cls(tls / "certChain.pem", tls / "key.pem", tls / "mesh-ca.pem")


def server_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(files.cert_chain, files.key)
    if files.trust_anchor is not None:
        ctx.load_verify_locations(files.trust_anchor)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(files: TlsFiles | None, trust_anchor: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(trust_anchor)
    if files is not None:
        ctx.load_cert_chain(files.cert_chain, files.key)
    return ctx


@dataclass(frozen=True)
class ServerEvent:
    accepted: bool
    detail: str  # the client's SANs, or why the handshake failed


@dataclass
class LoopbackServer(abc.ABC):
    """Accepts connections until its listening socket is closed; :meth:`handle` serves each one."""

    sock: socket.socket

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.handle(conn)

    @abc.abstractmethod
    def handle(self, conn: socket.socket) -> None:
        """Serve one accepted connection (and close it)."""


@dataclass
class _Server(LoopbackServer):
    """Serves connections one at a time; answers ``hello <client SAN> from <name>`` to a verified peer."""

    name: str = ""
    ctx: ssl.SSLContext | None = None
    events: list[ServerEvent] = field(default_factory=list)

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(IO_TIMEOUT)
            self.events.append(self._handshake(conn))

    def _handshake(self, raw: socket.socket) -> ServerEvent:
        assert self.ctx is not None
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as tls:
                sans = _dns_names(tls.getpeercert(binary_form=True))
                line = tls.recv(MAX_LINE)
                if not line:
                    return ServerEvent(False, "the client closed the connection")
                who = sans[0] if sans else "?"
                tls.sendall(f"hello {who} from {self.name}\n".encode())
                return ServerEvent(True, ",".join(sans))
        except (ssl.SSLError, OSError) as e:
            return ServerEvent(False, _reason(e))


def _dns_names(der: bytes | None) -> list[str]:
    if not der:
        return []
    try:
        ext = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(x509.DNSName))


def _reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError) and e.reason:
        return str(e.reason)
    return type(e).__name__ if not str(e) else str(e)[:120]


S = TypeVar("S", bound=LoopbackServer)


@contextlib.contextmanager
def serving_on_loopback(make: Callable[[socket.socket], S], name: str) -> Iterator[S]:
    """Run ``make(listening socket).serve()`` in a thread on a free loopback port until the block exits."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = make(sock)
    thread = threading.Thread(target=server.serve, name=name, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(IO_TIMEOUT)


def serving(name: str, ctx: ssl.SSLContext) -> contextlib.AbstractContextManager[_Server]:
    return serving_on_loopback(lambda sock: _Server(sock, name, ctx), f"mtls-{name}")


def call(ctx: ssl.SSLContext, port: int, server_hostname: str) -> tuple[bool, str]:
    """One request; (True, reply) or (False, why it failed)."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            tls.sendall(b"GET /emojis\n")
            # TLS 1.3: a server that rejects our certificate says so only after our handshake finished.
            reply = tls.recv(MAX_LINE)
            if not reply:
                return False, "the server closed the connection"
            return True, reply.decode(errors="replace").strip()
    except (ssl.SSLError, OSError) as e:
        return False, _reason(e)


# ---- unattested credentials ---------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    sans: list[str],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def write_unattested(directory: Path, name: str, *, other_ca: bool) -> TlsFiles:
    """Credentials that name ``name`` but were never attested: self-signed, or from a CA of our own."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    if other_ca:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("Not the mesh CA", ca_key, "Not the mesh CA", ca_key, ca=True, sans=[])
        leaf = _cert(name, key, "Not the mesh CA", ca_key, ca=False, sans=[name, "*"])
        chain = [leaf, ca]
    else:
        chain = [_cert(name, key, name, key, ca=False, sans=[name, "*"])]
    tag = "other-ca" if other_ca else "self-signed"
    pem = serialization.Encoding.PEM
    cert_path, key_path = directory / f"{tag}-{name}.pem", directory / f"{tag}-{name}-key.pem"
    cert_path.write_bytes(b"".join(c.public_bytes(pem) for c in chain))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return TlsFiles(cert_path, key_path, None)


# ---- the proof ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    description: str
    expected: str  # "accepted" | "refused"
    observed: str
    detail: str

    @property
    def as_expected(self) -> bool:
        return self.expected == self.observed


@dataclass(frozen=True)
class Proof:
    exchanges: list[Exchange]

    @property
    def passed(self) -> bool:
        return bool(self.exchanges) and all(e.as_expected for e in self.exchanges)


def prove(server_pod: str, server_dir: Path, client_pod: str, client_dir: Path, scratch: Path) -> Proof:
    """``client_pod`` calls ``server_pod`` with mutual TLS; three unattested parties must be refused."""
    server_files, client_files = TlsFiles.of_pod(server_dir), TlsFiles.of_pod(client_dir)
    anchor = client_dir / "tls-config" / "mesh-ca.pem"  # the client trusts only its own mesh CA file
    exchanges: list[Exchange] = []

    with serving(server_pod, server_context(server_files)) as srv:

        def attempt(description: str, expected: str, ctx: ssl.SSLContext) -> None:
            before = len(srv.events)
            ok, detail = call(ctx, srv.port, server_pod)
            seen = srv.events[before:] if _settle(srv, before) else []
            # Accepted means both sides agree: the client got an answer and the server verified the client.
            accepted = ok and bool(seen) and seen[-1].accepted
            if seen and not seen[-1].accepted:
                detail = f"{server_pod} refused: {seen[-1].detail}"
            elif accepted:
                detail = f"{detail} (client certificate SANs {seen[-1].detail})"
            exchanges.append(Exchange(description, expected, "accepted" if accepted else "refused", detail))

        attempt(
            f"{client_pod} -> {server_pod} (both attested)",
            "accepted",
            client_context(client_files, anchor),
        )
        self_signed = write_unattested(scratch, client_pod, other_ca=False)
        attempt(
            f"unattested client (self-signed '{client_pod}') -> {server_pod}",
            "refused",
            client_context(self_signed, anchor),
        )
        attempt(
            f"unattested client (no certificate) -> {server_pod}",
            "refused",
            client_context(None, anchor),
        )

    impostor = write_unattested(scratch, server_pod, other_ca=True)
    with serving(f"impostor {server_pod}", server_context(impostor)) as fake:
        ok, detail = call(client_context(client_files, anchor), fake.port, server_pod)
        exchanges.append(
            Exchange(
                f"{client_pod} -> unattested server (cert for '{server_pod}' from another CA)",
                "refused",
                "accepted" if ok else "refused",
                f"{client_pod} refused: {detail}" if not ok else detail,
            )
        )
    return Proof(exchanges)


def _settle(srv: _Server, before: int) -> bool:
    """Wait briefly for the server thread to record the connection it just handled."""
    deadline = time.monotonic() + IO_TIMEOUT
    while len(srv.events) <= before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
