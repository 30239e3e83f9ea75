"""Common runtime configuration of every service: flags, each with an environment-variable default."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contrast.runtime.connection import PASSWORD_ENV, USER_ENV, NatsCredentials
from contrast.runtime.process import ProcessConfig, add_process_arguments

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Settings shared by every service process (see :func:`parse_args` for the flags and variables)."""

    nats_urls: tuple[str, ...] = (DEFAULT_NATS_URL,)
    replica: str = ""  # unique per replica; defaults to <hostname>-<pid>
    metrics_port: int | None = None  # None: no metrics server; 0: any free port
    metrics_addr: str = "127.0.0.1"
    max_concurrency: int = 64  # concurrent handler tasks per service instance (endpoints)
    max_pending: int = 1024  # messages queued per endpoint subscription before NATS drops (slow consumer)
    shutdown_timeout: float = 30.0  # drain budget on SIGTERM; Kubernetes' default grace period is 30 s
    log_level: str = "INFO"
    js_replicas: int = 1  # JetStream replicas for streams/buckets this service creates (3 in production)
    credentials: NatsCredentials | None = (
        None  # the NATS user of this service's role, if the server has users
    )

    def __post_init__(self) -> None:
        if not self.nats_urls:
            raise ValueError("at least one NATS URL is required")
        if self.max_concurrency < 1 or self.max_pending < 1:
            raise ValueError("max_concurrency and max_pending must be >= 1")
        if self.js_replicas not in (1, 3, 5):
            raise ValueError("js_replicas must be 1, 3 or 5")
        self.process  # noqa: B018 - validates the process-level settings

    @property
    def process(self) -> ProcessConfig:
        """The process-level part (replica, metrics server, drain budget, log level)."""
        return ProcessConfig(
            replica=self.replica,
            metrics_port=self.metrics_port,
            metrics_addr=self.metrics_addr,
            shutdown_timeout=self.shutdown_timeout,
            log_level=self.log_level,
        )

    @property
    def replica_id(self) -> str:
        return self.process.replica_id


def add_runtime_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    """Add the common flags; each defaults to its ``CONTRAST_*`` environment variable."""
    env = os.environ if env is None else env
    g = parser.add_argument_group("runtime")
    g.add_argument(
        "--nats",
        default=env.get("CONTRAST_NATS_URL", DEFAULT_NATS_URL),
        help="NATS server URL(s), comma-separated (env CONTRAST_NATS_URL; default %(default)s)",
    )
    add_process_arguments(g, env)
    g.add_argument(
        "--max-concurrency",
        type=int,
        default=int(env.get("CONTRAST_MAX_CONCURRENCY", "64")),
        help="concurrent request handlers (env CONTRAST_MAX_CONCURRENCY; default %(default)s)",
    )
    g.add_argument(
        "--max-pending",
        type=int,
        default=int(env.get("CONTRAST_MAX_PENDING", "1024")),
        help="queued requests per endpoint before shedding (env CONTRAST_MAX_PENDING)",
    )
    g.add_argument(
        "--js-replicas",
        type=int,
        default=int(env.get("CONTRAST_JS_REPLICAS", "1")),
        choices=[1, 3, 5],
        help="JetStream replicas of created streams (env CONTRAST_JS_REPLICAS)",
    )
    g.add_argument(
        "--nats-user",
        default=env.get(USER_ENV, ""),
        help=f"NATS user of this service's role (env {USER_ENV}; its password only from env {PASSWORD_ENV})",
    )
    # The password never comes from a flag: the command line is readable by every process on the node.
    parser.set_defaults(nats_password=env.get(PASSWORD_ENV, ""))


def config_from_args(args: argparse.Namespace) -> RuntimeConfig:
    return RuntimeConfig(
        nats_urls=tuple(u.strip() for u in str(args.nats).split(",") if u.strip()),
        replica=args.replica,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        max_concurrency=args.max_concurrency,
        max_pending=args.max_pending,
        shutdown_timeout=args.shutdown_timeout,
        log_level=args.log_level,
        js_replicas=args.js_replicas,
        credentials=NatsCredentials.from_env({USER_ENV: args.nats_user, PASSWORD_ENV: args.nats_password}),
    )


def parse_args(
    prog: str, description: str, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> RuntimeConfig:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_runtime_arguments(parser, env)
    args = parser.parse_args(argv)
    try:
        return config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
