"""What every Contrast process shares, with or without NATS: its flags, its metrics and health server, and
its stop signals.

The NATS services get these through :func:`contrast.runtime.main`; a process without NATS (the mesh sidecar)
uses them directly, so that its replica name, ``/metrics``, ``/readyz`` and ``/livez``, log level and drain
budget behave exactly as the other services' do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass

from contrast.runtime.metrics import Metrics

METRICS_PORT_ENV = "CONTRAST_METRICS_PORT"
METRICS_ADDR_ENV = "CONTRAST_METRICS_ADDR"


@dataclass(frozen=True, kw_only=True)
class ProcessConfig:
    """Settings of any service process (see :func:`add_process_arguments`)."""

    replica: str = ""  # unique per replica; defaults to <hostname>-<pid>
    metrics_port: int | None = None  # None: no metrics server; 0: any free port
    metrics_addr: str = "127.0.0.1"
    shutdown_timeout: float = 30.0  # drain budget on SIGTERM; Kubernetes' default grace period is 30 s
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.shutdown_timeout <= 0:
            raise ValueError("shutdown_timeout must be positive")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError("metrics_port out of range")

    @property
    def replica_id(self) -> str:
        return self.replica or f"{socket.gethostname()}-{os.getpid()}"


def add_process_arguments(
    group: argparse._ArgumentGroup | argparse.ArgumentParser,
    env: Mapping[str, str],
    *,
    metrics_port_env: str = METRICS_PORT_ENV,
    metrics_addr_default: str = "127.0.0.1",
) -> None:
    """The flags of :class:`ProcessConfig`; each defaults to its environment variable."""
    port = env.get(metrics_port_env)
    group.add_argument(
        "--replica",
        default=env.get("CONTRAST_REPLICA", ""),
        help="replica id (env CONTRAST_REPLICA; default <hostname>-<pid>)",
    )
    group.add_argument(
        "--metrics-port",
        type=int,
        default=int(port) if port else None,
        help=f"serve /metrics, /readyz and /livez on this port, 0 = any free port (env {metrics_port_env})",
    )
    group.add_argument(
        "--metrics-addr",
        default=env.get(METRICS_ADDR_ENV, metrics_addr_default),
        help=f"address for /metrics (env {METRICS_ADDR_ENV}; default %(default)s)",
    )
    group.add_argument(
        "--shutdown-timeout",
        type=float,
        default=float(env.get("CONTRAST_SHUTDOWN_TIMEOUT", "30")),
        help="seconds to drain in-flight work on SIGTERM (env CONTRAST_SHUTDOWN_TIMEOUT)",
    )
    group.add_argument(
        "--log-level",
        default=env.get("CONTRAST_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level (env CONTRAST_LOG_LEVEL; default %(default)s)",
    )


def process_config_from_args(args: argparse.Namespace) -> ProcessConfig:
    return ProcessConfig(
        replica=args.replica,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        shutdown_timeout=args.shutdown_timeout,
        log_level=args.log_level,
    )


async def start_metrics_server(
    stack: AsyncExitStack, metrics: Metrics, port: int | None, addr: str
) -> int | None:
    """Serve ``metrics`` (with ``/readyz`` and ``/livez``) if ``port`` is set; closed when ``stack`` unwinds.

    Returns the bound port, or None without a server.
    """
    if port is None:
        return None
    bound = metrics.serve(port, addr)
    # shutdown() waits for the server thread's poll loop: keep that wait off the event loop.
    stack.push_async_callback(asyncio.to_thread, metrics.close)
    return bound


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT while the block runs.

    Install it before startup, so that a SIGTERM during startup lets startup finish and then shuts down in
    order (instead of killing the process).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
