"""The sidecar's listeners and connections: TLS termination for ingress, TLS origination for egress.

Ingress. In a pod, TPROXY hands every new inbound TCP connection to one of two transparent listeners
(15006: client certificate required; 15007: TLS without one); the accepted socket's local address is the
connection's original destination, to which the plaintext is forwarded once the handshake succeeded. A
connection whose original destination is one of the sidecar's own listeners is dropped (it would loop back
into the sidecar). Without redirection (local runs, benchmarks) a :class:`Forward` stands in for TPROXY: a
listener per pod port, and the port's mode from the ingress rules (passthrough ports forward plaintext).

Egress. A plaintext listener per rule on its loopback address; each connection is forwarded over mutual TLS
to the rule's remote, whose certificate must chain to the mesh CA and, unless turned off, name the remote
host in a SAN. ``resolve`` can point a remote at another address (as ``curl --resolve``); the certificate
check still uses the remote host of the rule.

Every connection ends with one log line (``mesh_connection``) and its counters; refusals say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final

from contrast.mesh.config import EgressRule, MeshConfig, PortMode
from contrast.meshproxy.credentials import Credentials
from contrast.meshproxy.relay import Plain, Raw, Relay, Tls, Truncated
from contrast.runtime.logs import get_logger
from contrast.runtime.metrics import Metrics

BACKLOG: Final = 1024
Address = tuple[str, int]
Handler = Callable[[socket.socket, Address], Coroutine[Any, Any, None]]

# OpenSSL verification results (X509_V_ERR_*) and library reasons, mapped to a small set of metric labels.
_VERIFY_REASONS: Final = {
    9: "not_yet_valid",
    10: "expired",
    62: "san_mismatch",
    2: "untrusted",
    7: "untrusted",
    18: "untrusted",
    19: "untrusted",
    20: "untrusted",
    21: "untrusted",
}
_NOT_TLS: Final = frozenset(
    {
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "WRONG_VERSION_NUMBER",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
    }
)
_NO_CLIENT_CERT: Final = frozenset({"PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"})


def classify(exc: BaseException) -> tuple[str, str]:
    """(metric reason, human detail) of a failed handshake or connection."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_REASONS.get(exc.verify_code, "verify_failed"), str(exc.verify_message)
    if isinstance(exc, ssl.SSLError):
        r = str(exc.reason or "")
        if r in _NOT_TLS:
            return "not_tls", r
        if r in _NO_CLIENT_CERT:
            return "no_client_certificate", r
        if r in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION"):
            return "protocol_version", r
        if r.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_")):
            return "peer_alert", r  # the peer refused us (e.g. our certificate)
        if isinstance(exc, ssl.SSLEOFError):
            return "peer_closed", r or "EOF during the handshake"
        return "tls_error", r or str(exc)[:120]
    if isinstance(exc, Truncated):
        return "truncated", "the TLS stream ended without close_notify"
    if isinstance(exc, TimeoutError):
        return "timeout", "no complete handshake in time"
    if isinstance(exc, OSError):
        return "peer_closed", type(exc).__name__
    return "internal", type(exc).__name__


@dataclass(frozen=True, slots=True)
class Forward:
    """Local stand-in for TPROXY: connections to ``listen`` act as if sent to the pod's ``pod_port``."""

    pod_port: int
    listen: Address
    target: Address

    @classmethod
    def parse(cls, text: str) -> Forward:
        """``<pod port>@<listen host>:<port>-><target host>:<port>``."""
        try:
            port_text, rest = text.split("@", 1)
            listen_text, target_text = rest.split("->", 1)
            pod_port = int(port_text)
            if not 0 < pod_port < 65536:
                raise ValueError(pod_port)
            return cls(pod_port, _address(listen_text, any_port=True), _address(target_text))
        except ValueError:
            raise ValueError(f"invalid forward {text!r}: expected PORT@HOST:PORT->HOST:PORT") from None


def _address(text: str, *, any_port: bool = False) -> Address:
    """``host:port``; with ``any_port``, port 0 (a listener on any free port) is allowed."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 if any_port else 1) <= int(port) < 65536:
        raise ValueError(f"invalid address {text!r}")
    return host.strip("[]"), int(port)


def parse_resolve(text: str) -> tuple[Address, Address]:
    """``<host>:<port>=<address>:<port>``: connect to the right side for a rule's remote on the left."""
    left, sep, right = text.partition("=")
    if not sep:
        raise ValueError(f"invalid resolve entry {text!r}: expected HOST:PORT=ADDRESS:PORT")
    return _address(left), _address(right)


@dataclass(frozen=True)
class Limits:
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    max_connections: int = 4096


class Proxy:
    """Accepts, authenticates and relays; one instance per sidecar process."""

    def __init__(
        self,
        config: MeshConfig,
        credentials: Callable[[], Credentials],
        metrics: Metrics,
        *,
        limits: Limits = Limits(),
        resolve: Mapping[Address, Address] | None = None,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.metrics = metrics
        self.limits = limits
        self.resolve = dict(resolve or {})
        self.log = get_logger("contrast.meshproxy")
        self.own_ports: set[int] = set()  # original destinations that would loop back into the sidecar
        self._listeners: list[socket.socket] = []
        self._accepting: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()

    # ---- listeners ----------------------------------------------------------------------------------

    def _listen(self, address: Address, *, transparent: bool = False) -> socket.socket:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if transparent:
                sock.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listeners.append(sock)
        return sock

    def _serve(self, sock: socket.socket, handle: Handler) -> None:
        task = asyncio.create_task(self._accept(sock, handle), name=f"accept {sock.getsockname()}")
        self._accepting.add(task)

    async def _accept(self, lsock: socket.socket, handle: Handler) -> None:
        while True:
            try:
                sock, peer = await self._loop.sock_accept(lsock)
            except OSError as e:  # e.g. EMFILE: keep the listener, back off briefly
                self.log.warning("accept_failed", error=type(e).__name__, detail=str(e)[:200])
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._guarded(handle(sock, peer), peer))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _guarded(self, connection: Coroutine[Any, Any, None], peer: Address) -> None:
        try:
            await connection
        except Exception:  # a bug of ours: log it with the connection, keep serving the others
            self.log.exception("mesh_connection_failed", peer=_fmt(peer))

    def start_ingress_transparent(self, port: int, mode: PortMode) -> Address:
        """A transparent ingress listener on ``0.0.0.0:port`` (TPROXY's target)."""
        sock = self._listen(("0.0.0.0", port), transparent=True)  # noqa: S104 - every pod address
        self.own_ports.add(port)

        async def handle(s: socket.socket, peer: Address) -> None:
            await self._ingress(
                s, peer, mode, _sockname(s), rule="ingress" if mode is PortMode.MTLS else "tls"
            )

        self._serve(sock, handle)
        return _sockname(sock)

    def start_forward(self, forward: Forward) -> Address:
        """A local ingress listener standing in for ``forward.pod_port`` (no redirection)."""
        sock = self._listen(forward.listen)
        mode = self.config.ingress.mode(forward.pod_port)

        async def handle(s: socket.socket, peer: Address) -> None:
            await self._ingress(s, peer, mode, forward.target, rule=f"port-{forward.pod_port}")

        self._serve(sock, handle)
        return _sockname(sock)

    def start_egress(self, rule: EgressRule) -> Address:
        sock = self._listen(rule.listen)

        async def handle(s: socket.socket, peer: Address) -> None:
            await self._egress(s, peer, rule)

        self._serve(sock, handle)
        return _sockname(sock)

    # ---- connections --------------------------------------------------------------------------------

    def _admit(self, direction: str, rule: str, sock: socket.socket) -> bool:
        if len(self._connections) > self.limits.max_connections:
            self.metrics.mesh_connections.labels(direction, rule, "overload").inc()
            sock.close()
            return False
        return True

    async def _connect(self, address: Address) -> Raw:
        infos: list[tuple[Any, Any, int, str, Any]]
        try:  # an address needs no resolver (getaddrinfo would go through a thread)
            ip = ipaddress.ip_address(address[0])
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            infos = [(family, socket.SOCK_STREAM, 0, "", (str(ip), address[1]))]
        except ValueError:
            infos = await self._loop.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)
        last: OSError = OSError(f"no address for {address[0]}")
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await self._loop.sock_connect(sock, sockaddr)
            except OSError as e:
                sock.close()
                last = e
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return Raw(sock, self._loop)
        raise last

    async def _ingress(
        self, sock: socket.socket, peer: Address, mode: PortMode, target: Address, *, rule: str
    ) -> None:
        direction = "ingress"
        if not self._admit(direction, rule, sock):
            return
        started = time.monotonic()
        raw = Raw(sock, self._loop)
        fields: dict[str, Any] = {
            "rule": rule,
            "peer": _fmt(peer),
            "target": _fmt(target),
            "mode": mode.value,
        }
        if target[1] in self.own_ports:
            # Sent straight to a sidecar port, not redirected: forwarding it would connect to ourselves.
            raw.abort()
            self._done(direction, "loop", started, fields, reason="loop")
            return
        opened = [raw]  # aborted on every way out that did not close them (no-op for closed ones)
        self.metrics.mesh_active.labels(direction).inc()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            downstream: Plain | Tls = Plain(raw)
            if mode is not PortMode.PASSTHROUGH:
                creds = self.credentials()
                ctx = creds.server_mtls if mode is PortMode.MTLS else creds.server_tls
                downstream = Tls(raw, ctx, server_side=True)
                if not await self._handshake(direction, downstream, started, fields):
                    return
            upstream = await self._upstream(direction, target, started, fields)
            if upstream is None:
                return
            opened.append(upstream)
            await self._relay(direction, downstream, Plain(upstream), started, fields)
        finally:
            for r in opened:
                r.abort()
            self.metrics.mesh_active.labels(direction).dec()

    async def _egress(self, sock: socket.socket, peer: Address, rule: EgressRule) -> None:
        direction = "egress"
        if not self._admit(direction, rule.name, sock):
            return
        started = time.monotonic()
        app = Raw(sock, self._loop)
        address = self.resolve.get(rule.remote, rule.remote)
        fields: dict[str, Any] = {"rule": rule.name, "peer": _fmt(peer), "target": _fmt(rule.remote)}
        if address != rule.remote:
            fields["address"] = _fmt(address)
        opened = [app]
        self.metrics.mesh_active.labels(direction).inc()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw = await self._upstream(direction, address, started, fields)
            if raw is None:
                return
            opened.append(raw)
            creds = self.credentials()
            ctx = creds.client if self.config.verify_egress_san else creds.client_any_san
            tls = Tls(raw, ctx, server_side=False, server_hostname=rule.remote_host)
            if await self._handshake(direction, tls, started, fields):
                await self._relay(direction, tls, Plain(app), started, fields)
        finally:
            for r in opened:
                r.abort()
            self.metrics.mesh_active.labels(direction).dec()

    async def _upstream(
        self, direction: str, address: Address, started: float, fields: dict[str, Any]
    ) -> Raw | None:
        """The connection onwards within the limit; a failure is counted, logged and None."""
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                return await self._connect(address)
        except (OSError, TimeoutError) as e:
            self._done(direction, "upstream_failed", started, fields, reason=type(e).__name__)
            return None

    async def _handshake(self, direction: str, tls: Tls, started: float, fields: dict[str, Any]) -> bool:
        """Complete ``tls``'s handshake within the limit; a failure is counted, logged and False."""
        try:
            async with asyncio.timeout(self.limits.handshake_timeout):
                await tls.handshake()
        except (ssl.SSLError, OSError, TimeoutError) as e:
            reason, detail = classify(e)
            self.metrics.mesh_handshake_failures.labels(direction, reason).inc()
            fields["detail"] = detail
            self._done(direction, "refused", started, fields, reason=reason)
            return False
        self.metrics.mesh_handshake_seconds.labels(direction).observe(time.monotonic() - started)
        cert = tls.obj.getpeercert()
        if cert:
            fields["peer_sans"] = [str(san[1]) for san in cert.get("subjectAltName", ())]
        return True

    async def _relay(
        self, direction: str, peer: Plain | Tls, app: Plain, started: float, fields: dict[str, Any]
    ) -> None:
        relay = Relay(peer, app)
        outcome, reason = "ok", None
        try:
            await relay.run()
        except (ssl.SSLError, OSError) as e:
            # After the handshake: a truncated stream, a reset, or the peer refusing our certificate late
            # (TLS 1.3 clients learn that only when they first read).
            outcome, (reason, detail) = "aborted", classify(e)
            fields["detail"] = detail
            if reason in ("peer_alert", "untrusted", "expired", "san_mismatch", "no_client_certificate"):
                self.metrics.mesh_handshake_failures.labels(direction, reason).inc()
        finally:
            self.metrics.mesh_bytes.labels(direction, "from_peer").inc(relay.a_to_b)
            self.metrics.mesh_bytes.labels(direction, "to_peer").inc(relay.b_to_a)
            fields["bytes_from_peer"], fields["bytes_to_peer"] = relay.a_to_b, relay.b_to_a
        self._done(direction, outcome, started, fields, reason=reason)

    def _done(
        self, direction: str, outcome: str, started: float, fields: dict[str, Any], *, reason: str | None
    ) -> None:
        self.metrics.mesh_connections.labels(direction, fields["rule"], outcome).inc()
        level = self.log.info if outcome == "ok" else self.log.warning
        level(
            "mesh_connection",
            direction=direction,
            outcome=outcome,
            reason=reason,
            seconds=round(time.monotonic() - started, 6),
            **fields,
        )

    # ---- shutdown -----------------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        for task in self._accepting:
            task.cancel()
        self._accepting.clear()
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()

    @property
    def active(self) -> int:
        return len(self._connections)

    async def drain(self, timeout: float) -> bool:
        """Wait for open connections to end (up to ``timeout``), then cut the rest. True if all ended."""
        pending = set(self._connections)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
        return not pending


def _sockname(sock: socket.socket) -> Address:
    name = sock.getsockname()
    return str(name[0]), int(name[1])


def _fmt(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
