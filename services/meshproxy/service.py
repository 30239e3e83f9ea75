"""The sidecar's life: wait for credentials, listen, redirect, open the pod, serve, reload, drain.

Startup order (each step only after the previous one succeeded, so the pod is never reachable around the
mesh):

1. load the credentials from the TLS directory, waiting (not ready) until the initializer has written them;
2. bind the ingress and egress listeners and start accepting;
3. with TPROXY redirection, install the mangle-table rules (unless ingress is ``DISABLED``), then remove the
   default-deny rule that kept the pod closed until now;
4. report ready (``contrast_ready`` = 1, ``/readyz`` 200).

While serving, the files are polled and reloaded when they change (new connections use the new contexts;
open ones keep theirs). On SIGTERM: not ready, stop accepting, let open connections finish within the drain
budget, cut the rest. The redirection rules stay: a sidecar that is gone leaves inbound connections with
nowhere to go, which fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from contrast.mesh.config import INGRESS_PORT, INGRESS_PORT_NO_CLIENT_CERT, MeshConfig, PortMode
from contrast.mesh.netfilter import Netfilter
from contrast.meshproxy import credentials as cred
from contrast.meshproxy.proxy import Address, Forward, Limits, Proxy
from contrast.runtime.logs import get_logger
from contrast.runtime.metrics import Metrics
from contrast.runtime.process import ProcessConfig, start_metrics_server

SERVICE = "meshproxy"
VERSION = "0.1.0"
_log = get_logger("contrast.meshproxy")


class Redirect(Enum):
    TPROXY = "tproxy"  # in a pod: transparent listeners and netfilter rules
    NONE = "none"  # no netfilter (local runs, benchmarks): ingress through explicit forwards


@dataclass(frozen=True, kw_only=True)
class SidecarConfig:
    mesh: MeshConfig
    process: ProcessConfig = field(default_factory=ProcessConfig)
    tls_dir: Path = cred.DEFAULT_TLS_DIR
    redirect: Redirect = Redirect.TPROXY
    forwards: tuple[Forward, ...] = ()
    resolve: Mapping[Address, Address] = field(default_factory=dict)
    reload_interval: float = 2.0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.redirect is Redirect.TPROXY and self.forwards:
            raise ValueError("forwards replace TPROXY redirection: use them with --redirect none")
        if self.reload_interval <= 0:
            raise ValueError("reload interval must be positive")


class CredentialStore:
    """The credentials in use, and the poller that replaces them when the files change."""

    def __init__(self, directory: Path, metrics: Metrics) -> None:
        self.directory = directory
        self.metrics = metrics
        self.current: cred.Credentials | None = None
        self._last_error = ""

    def get(self) -> cred.Credentials:
        if self.current is None:
            raise RuntimeError("no credentials loaded")
        return self.current

    async def try_load(self) -> bool:
        try:
            loaded = await asyncio.to_thread(cred.load, self.directory)
        except cred.CredentialsUnavailable as e:
            self.metrics.mesh_certificate_reloads.labels("failed").inc()
            if str(e) != self._last_error:  # once per distinct reason, not once per poll
                _log.warning("certificates_unavailable", directory=str(self.directory), reason=str(e))
                self._last_error = str(e)
            return False
        previous, self.current, self._last_error = self.current, loaded, ""
        self.metrics.mesh_certificate_reloads.labels("ok").inc()
        self.metrics.mesh_certificate_expiry.set(loaded.not_after.timestamp())
        _log.info(
            "certificates_loaded" if previous is None else "certificates_reloaded",
            mesh_ca_sha256=loaded.mesh_ca_sha256,
            sans=list(loaded.leaf_sans),
            not_after=loaded.not_after.isoformat(),
            mesh_ca_changed=previous is not None and previous.mesh_ca_sha256 != loaded.mesh_ca_sha256,
        )
        if loaded.not_after <= dt.datetime.now(dt.UTC):
            _log.warning("certificate_expired", not_after=loaded.not_after.isoformat())
        return True

    async def wait_loaded(self, interval: float) -> None:
        while True:
            if await self.try_load():
                return
            await asyncio.sleep(interval)

    async def changed(self) -> bool:
        try:
            stamp = await asyncio.to_thread(cred.file_stamp, self.directory)
        except OSError:
            return True  # a file vanished: try_load says why, and the current contexts stay
        return self.current is None or stamp != self.current.stamp

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if await self.changed():
                await self.try_load()


@dataclass
class RunningSidecar:
    config: SidecarConfig
    metrics: Metrics
    proxy: Proxy
    store: CredentialStore
    metrics_port: int | None
    ingress: dict[str, Address] = field(default_factory=dict)  # listener name -> bound address
    egress: dict[str, Address] = field(default_factory=dict)
    ruleset: str = ""

    @property
    def ready(self) -> bool:
        return bool(self.metrics.ready._value.get() == 1)


@contextlib.asynccontextmanager
async def serve(config: SidecarConfig, metrics: Metrics | None = None) -> AsyncIterator[RunningSidecar]:
    """Run the sidecar until the block exits; exiting drains and stops it (see the module docstring)."""
    metrics = metrics or Metrics()
    # What this replica is, as every service says it: the rules and dashboards join on it.
    metrics.service_info.labels(SERVICE, config.process.replica_id, VERSION).set(1)
    async with AsyncExitStack() as stack:
        port = await start_metrics_server(
            stack, metrics, config.process.metrics_port, config.process.metrics_addr
        )
        store = CredentialStore(config.tls_dir, metrics)
        _log.info(
            "sidecar_starting",
            redirect=config.redirect.value,
            ingress="DISABLED"
            if not config.mesh.ingress.enabled
            else [r.name for r in config.mesh.ingress.rules],
            egress=[r.name for r in config.mesh.egress],
            tls_dir=str(config.tls_dir),
            metrics_port=port,
        )
        await store.wait_loaded(config.reload_interval)
        proxy = Proxy(config.mesh, store.get, metrics, limits=config.limits, resolve=config.resolve)
        running = RunningSidecar(config, metrics, proxy, store, port)
        stack.callback(proxy.stop_accepting)
        if config.mesh.ingress.enabled:
            if config.redirect is Redirect.TPROXY:
                running.ingress["mtls"] = proxy.start_ingress_transparent(INGRESS_PORT, PortMode.MTLS)
                running.ingress["tls"] = proxy.start_ingress_transparent(
                    INGRESS_PORT_NO_CLIENT_CERT, PortMode.TLS
                )
            for fwd in config.forwards:
                running.ingress[f"port-{fwd.pod_port}"] = proxy.start_forward(fwd)
        for rule in config.mesh.egress:
            running.egress[rule.name] = proxy.start_egress(rule)
        if config.redirect is Redirect.TPROXY:
            netfilter = Netfilter.from_path()
            if config.mesh.ingress.enabled:
                running.ruleset = await netfilter.apply_ingress(config.mesh.ingress)
                _log.info("redirection_installed", rules=running.ruleset.splitlines())
            removed = await netfilter.remove_default_deny()
            _log.info("default_deny_removed" if removed else "default_deny_absent")
        watcher = asyncio.create_task(store.watch(config.reload_interval), name="certificate-watch")
        metrics.ready.set(1)
        _log.info("sidecar_ready", ingress=_fmt_all(running.ingress), egress=_fmt_all(running.egress))
        try:
            yield running
        finally:
            metrics.ready.set(0)
            watcher.cancel()
            proxy.stop_accepting()
            _log.info("sidecar_stopping", open_connections=proxy.active)
            drained = await proxy.drain(config.process.shutdown_timeout)
            _log.info("sidecar_stopped", drained=drained)


def _fmt_all(addresses: Mapping[str, Address]) -> dict[str, str]:
    return {name: f"{host}:{port}" for name, (host, port) in addresses.items()}
