"""Contrast's service-mesh configuration grammar: the pod annotations and the sidecar's environment.

A pod opts into the mesh with any of three annotations; ``contrast generate`` copies their values into the
sidecar's environment, which the pod's runtime policy pins (so the configuration is attested):

- ``contrast.edgeless.systems/servicemesh-ingress`` → ``CONTRAST_INGRESS_PROXY_CONFIG``:
  ``""`` (or absent): every inbound TCP connection must do mutual TLS with a mesh-CA client certificate;
  ``DISABLED``: no inbound redirection at all; otherwise ``<name>#<port>#<disableTLS>`` entries joined by
  ``##``, where ``false`` terminates TLS on that port without requiring a client certificate and ``true``
  passes the port through in plaintext, unredirected.
- ``contrast.edgeless.systems/servicemesh-egress`` → ``CONTRAST_EGRESS_PROXY_CONFIG``:
  ``<name>#<listenIP>:<port>#<remoteHost>:<remotePort>`` entries joined by ``##``; the listen IP must be in
  127.0.0.0/8. An empty value is an error (it would add a sidecar that does nothing).
- ``contrast.edgeless.systems/servicemesh-admin-interface-port`` → ``CONTRAST_ADMIN_PORT``: the sidecar's
  ``/metrics``, ``/readyz`` and ``/livez``; without it there is no admin interface.

The grammar follows Contrast's parser (empty entries between separators are skipped, ``disableTLS`` takes
Go's boolean spellings); it is stricter where Contrast's would accept a broken configuration: ports must be
1..65535, hosts non-empty, and one port or listen address may not be configured twice.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum
from typing import Final

ANNOTATION_PREFIX: Final = "contrast.edgeless.systems/"
INGRESS_ANNOTATION: Final = ANNOTATION_PREFIX + "servicemesh-ingress"
EGRESS_ANNOTATION: Final = ANNOTATION_PREFIX + "servicemesh-egress"
ADMIN_PORT_ANNOTATION: Final = ANNOTATION_PREFIX + "servicemesh-admin-interface-port"
# Ours, beyond Contrast: "false" turns off the egress check that the remote certificate names remoteHost.
EGRESS_VERIFY_SAN_ANNOTATION: Final = ANNOTATION_PREFIX + "servicemesh-egress-verify-san"

INGRESS_ENV: Final = "CONTRAST_INGRESS_PROXY_CONFIG"
EGRESS_ENV: Final = "CONTRAST_EGRESS_PROXY_CONFIG"
ADMIN_PORT_ENV: Final = "CONTRAST_ADMIN_PORT"
EGRESS_VERIFY_SAN_ENV: Final = "CONTRAST_EGRESS_VERIFY_SAN"

INGRESS_DISABLED: Final = "DISABLED"
# The sidecar's two transparent ingress listeners (Contrast's Envoy ports): client certificate required, and
# TLS without a client certificate.
INGRESS_PORT: Final = 15006
INGRESS_PORT_NO_CLIENT_CERT: Final = 15007

_ENTRY_SEPARATOR: Final = "##"
_FIELD_SEPARATOR: Final = "#"
_LOOPBACK: Final = ipaddress.ip_network("127.0.0.0/8")
# Go's strconv.ParseBool, which Contrast uses for disableTLS.
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class MeshConfigError(ValueError):
    """A service-mesh annotation or environment value that does not follow the grammar."""


class PortMode(Enum):
    """What the sidecar does with an inbound connection to a port."""

    MTLS = "mtls"  # terminate TLS, require and verify a mesh client certificate
    TLS = "tls"  # terminate TLS, verify a client certificate only if one is presented
    PASSTHROUGH = "passthrough"  # not redirected: plaintext reaches the application directly


@dataclass(frozen=True, slots=True)
class IngressRule:
    name: str  # informational
    port: int
    disable_tls: bool

    @property
    def mode(self) -> PortMode:
        return PortMode.PASSTHROUGH if self.disable_tls else PortMode.TLS


@dataclass(frozen=True, slots=True)
class EgressRule:
    name: str  # informational
    listen_host: str  # an IPv4 address in 127.0.0.0/8
    listen_port: int
    remote_host: str  # DNS name or IP address; the remote certificate must name it (unless turned off)
    remote_port: int

    @property
    def listen(self) -> tuple[str, int]:
        return self.listen_host, self.listen_port

    @property
    def remote(self) -> tuple[str, int]:
        return self.remote_host, self.remote_port


@dataclass(frozen=True, slots=True)
class Ingress:
    """The parsed ingress configuration. ``enabled`` is False only for ``DISABLED``."""

    enabled: bool = True
    rules: tuple[IngressRule, ...] = ()

    def mode(self, port: int) -> PortMode:
        """The mode of an inbound connection to ``port``: a rule's, or mutual TLS by default."""
        for rule in self.rules:
            if rule.port == port:
                return rule.mode
        return PortMode.MTLS


@dataclass(frozen=True, slots=True)
class MeshConfig:
    ingress: Ingress
    egress: tuple[EgressRule, ...] = ()
    admin_port: int | None = None
    verify_egress_san: bool = True


def _entries(text: str) -> list[str]:
    return [e for e in text.split(_ENTRY_SEPARATOR) if e != ""]


def _port(text: str, what: str, entry: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise MeshConfigError(f"{what} {text!r} in {entry!r} is not a port number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise MeshConfigError(f"{what} {port} in {entry!r} is outside 1..65535")
    return port


def _fields(entry: str) -> list[str]:
    parts = entry.split(_FIELD_SEPARATOR)
    if len(parts) != 3:
        raise MeshConfigError(f"invalid entry {entry!r}: expected three fields separated by '#'")
    return parts


def parse_ingress(text: str | None) -> Ingress:
    """The ingress configuration; absent and ``""`` both mean "mutual TLS on every port"."""
    if text is None or text == "":
        return Ingress()
    if text == INGRESS_DISABLED:
        return Ingress(enabled=False)
    rules: list[IngressRule] = []
    for entry in _entries(text):
        name, port_text, disable = _fields(entry)
        if disable in _TRUE:
            disable_tls = True
        elif disable in _FALSE:
            disable_tls = False
        else:
            raise MeshConfigError(f"invalid disableTLS {disable!r} in {entry!r}: expected true or false")
        rule = IngressRule(name=name, port=_port(port_text, "port", entry), disable_tls=disable_tls)
        if any(r.port == rule.port for r in rules):
            raise MeshConfigError(f"port {rule.port} is configured twice")
        rules.append(rule)
    return Ingress(rules=tuple(rules))


def split_host_port(text: str, entry: str) -> tuple[str, str]:
    """``host:port`` or ``[v6]:port``, as Go's ``net.SplitHostPort``."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise MeshConfigError(f"invalid address {text!r} in {entry!r}")
        return host, rest[1:]
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:
        raise MeshConfigError(f"invalid address {text!r} in {entry!r}: expected host:port")
    return host, port


def parse_egress(text: str | None) -> tuple[EgressRule, ...]:
    """The egress rules; absent or empty means none (``generate`` refuses an empty annotation itself)."""
    if not text:
        return ()
    rules: list[EgressRule] = []
    for entry in _entries(text):
        name, listen, remote = _fields(entry)
        listen_host, listen_port = split_host_port(listen, entry)
        try:
            listen_ip = ipaddress.ip_address(listen_host)
        except ValueError:
            raise MeshConfigError(f"listen address {listen_host!r} in {entry!r} is not an IP address")
        if listen_ip.version != 4 or listen_ip not in _LOOPBACK:
            raise MeshConfigError(f"listen address {listen_host} in {entry!r} is not in {_LOOPBACK}")
        remote_host, remote_port = split_host_port(remote, entry)
        if not remote_host or any(c.isspace() for c in remote_host):
            raise MeshConfigError(f"invalid remote host {remote_host!r} in {entry!r}")
        rule = EgressRule(
            name=name,
            listen_host=str(listen_ip),
            listen_port=_port(listen_port, "listen port", entry),
            remote_host=remote_host,
            remote_port=_port(remote_port, "remote port", entry),
        )
        if any(r.listen == rule.listen for r in rules):
            raise MeshConfigError(f"listen address {listen} is configured twice")
        rules.append(rule)
    return tuple(rules)


def parse_admin_port(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    return _port(text, "admin interface port", text)


def parse_flag(text: str | None, what: str, *, default: bool) -> bool:
    if text is None or text == "":
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise MeshConfigError(f"{what} must be true or false, got {text!r}")


def parse(
    ingress: str | None, egress: str | None, admin_port: str | None, verify_egress_san: str | None = None
) -> MeshConfig:
    """The sidecar's configuration from its four settings (environment values or annotation values)."""
    return MeshConfig(
        ingress=parse_ingress(ingress),
        egress=parse_egress(egress),
        admin_port=parse_admin_port(admin_port),
        verify_egress_san=parse_flag(verify_egress_san, EGRESS_VERIFY_SAN_ENV, default=True),
    )
