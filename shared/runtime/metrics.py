"""Prometheus metrics: every metric name in one place, one ``CollectorRegistry`` per service.

A registry per service instance (not the global default) lets tests build several services in one process
and keeps a replica's scrape to its own metrics. The HTTP server runs in prometheus-client's daemon thread,
off the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

_StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes hit these paths every few seconds; access logs would drown the service's own."""


_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


@dataclass(eq=False)
class Metrics:
    """The metrics of one service instance. Domain metrics are declared here too, so that the
    names exist once; services that do not use one simply never increment it."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        self._runtime_metrics(self.registry)
        self._domain_metrics(self.registry)
        self._mesh_metrics(self.registry)

    def _runtime_metrics(self, r: CollectorRegistry) -> None:
        """What every service's runtime measures: readiness, requests, stream deliveries and backlog."""
        self.service_info = Gauge(
            "contrast_service_info",
            "1, labelled with what this replica is: rules and dashboards join on it for the service name",
            ["service", "replica", "version"],
            registry=r,
        )
        self.ready = Gauge(
            "contrast_ready", "1 when this replica can do its job (readiness), else 0", registry=r
        )
        self.requests = Counter(
            "contrast_requests_total",
            "Endpoint requests by outcome code ('ok' or an error code)",
            ["endpoint", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "contrast_request_seconds",
            "Endpoint handling time",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "contrast_in_flight", "Requests or stream messages being handled", ["kind"], registry=r
        )
        self.deliveries = Counter(
            "contrast_stream_deliveries_total",
            "Stream messages by outcome (ack, nak, term)",
            ["consumer", "outcome"],
            registry=r,
        )
        self.deadletters = Counter(
            "contrast_deadletters_total", "Stream messages given up on", ["consumer", "reason"], registry=r
        )
        # The consumer's backlog as the server counts it (what KEDA scales on), polled by each replica of a
        # worker: undelivered messages, and delivered ones not yet acknowledged.
        self.stream_pending = Gauge(
            "contrast_stream_pending", "Messages of the consumer not yet delivered", ["consumer"], registry=r
        )
        self.stream_ack_pending = Gauge(
            "contrast_stream_ack_pending",
            "Messages of the consumer delivered but not yet acknowledged",
            ["consumer"],
            registry=r,
        )

    def _domain_metrics(self, r: CollectorRegistry) -> None:
        """The attestation flow's own figures (verifier, CA, manifest service)."""
        self.attestation_requests = Counter(
            "contrast_attestation_requests", "Attestation requests", ["tee"], registry=r
        )
        self.attestation_failures = Counter(
            "contrast_attestation_failures",
            "Rejected attestations by reason code",
            ["tee", "reason"],
            registry=r,
        )
        self.verification_seconds = Histogram(
            "contrast_verification_seconds",
            "Evidence verification time",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.certificates_issued = Counter(
            "contrast_certificates_issued", "Mesh certificates issued", registry=r
        )
        self.manifest_generation = Gauge(
            "contrast_manifest_generation", "Current manifest generation", registry=r
        )
        self.nonce_replays = Counter("contrast_nonce_replays", "Nonces presented more than once", registry=r)
        self.rejections_unanswered = Counter(
            "contrast_rejections_unanswered",
            "Rejected attestation requests left without a signed answer: the answer budget was spent",
            ["reason"],
            registry=r,
        )
        self.collateral_fetch_failures = Counter(
            "contrast_collateral_fetch_failures",
            "Attestation deliveries put back because their collateral could not be had (cache or vendor)",
            ["tee", "reason"],
            registry=r,
        )
        self.issuance_seconds = Histogram(
            "contrast_issuance_seconds",
            "CA: time from a verdict's delivery to its stored, sealed certificate bundle",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def _mesh_metrics(self, r: CollectorRegistry) -> None:
        """The service-mesh sidecar's figures (``direction``: ingress or egress)."""
        self.mesh_connections = Counter(
            "contrast_mesh_connections",
            "Mesh connections by rule and outcome (ok, refused, upstream_failed, loop, overload, aborted)",
            ["direction", "rule", "outcome"],
            registry=r,
        )
        self.mesh_handshake_failures = Counter(
            "contrast_mesh_handshake_failures",
            "TLS handshakes that failed, by reason (plaintext, untrusted, expired, san_mismatch, ...)",
            ["direction", "reason"],
            registry=r,
        )
        self.mesh_bytes = Counter(
            "contrast_mesh_bytes",
            "Application bytes relayed, from or to the remote mesh peer",
            ["direction", "flow"],
            registry=r,
        )
        self.mesh_active = Gauge(
            "contrast_mesh_active_connections", "Mesh connections open now", ["direction"], registry=r
        )
        self.mesh_handshake_seconds = Histogram(
            "contrast_mesh_handshake_seconds",
            "TLS handshake time of successful mesh connections",
            ["direction"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.mesh_certificate_reloads = Counter(
            "contrast_mesh_certificate_reloads",
            "Loads of the pod's mesh certificates by outcome (ok, failed)",
            ["outcome"],
            registry=r,
        )
        self.mesh_certificate_expiry = Gauge(
            "contrast_mesh_certificate_expiry_timestamp_seconds",
            "notAfter of the mesh certificate in use (Unix time)",
            registry=r,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Expose ``/metrics``, ``/readyz`` and ``/livez`` on ``addr:port`` (0 = any free port).

        ``/readyz`` answers 200 only while the ``contrast_ready`` gauge is 1 (kept current by the runtime's
        readiness refresher) and 503 otherwise, so Kubernetes probes see "can do the job", not "process up".
        The server runs in a daemon thread, off the event loop. Returns the bound port.
        """
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/readyz":
                ok = self.ready._value.get() == 1  # prometheus-client keeps the gauge value here
                status = "200 OK" if ok else "503 Service Unavailable"
                start_response(status, [("Content-Type", "text/plain")])
                return [b"ready\n" if ok else b"not ready\n"]
            if path == "/livez":
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok\n"]
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result

        server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        bound: int = server.server_port
        self._server = server
        return bound

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
