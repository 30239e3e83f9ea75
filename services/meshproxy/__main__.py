"""``python -m contrast.meshproxy``: the service-mesh sidecar of a confidential pod.

``contrast generate`` injects it into pods with a service-mesh annotation and pins its configuration in the
pod's runtime policy. ``python -m contrast.meshproxy default-deny install|remove`` manages the rule that keeps
a pod closed until its mesh is ready (install: the guest image, before any container; remove: the
``contrast-open`` init container of pods without a mesh). Exit codes: 0 stopped by SIGTERM/SIGINT; 1 a
runtime failure (listeners, netfilter); 2 a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from contrast.mesh import config as mc
from contrast.mesh.netfilter import Netfilter, NetfilterError
from contrast.meshproxy.credentials import DEFAULT_TLS_DIR
from contrast.meshproxy.proxy import Forward, Limits, parse_resolve
from contrast.meshproxy.service import SERVICE, Redirect, SidecarConfig, serve
from contrast.runtime.logs import configure_logging, get_logger
from contrast.runtime.process import add_process_arguments, process_config_from_args, stop_signals

_log = get_logger("contrast.meshproxy")


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    p = argparse.ArgumentParser(prog="python -m contrast.meshproxy", description=__doc__.split("\n")[0])
    mesh = p.add_argument_group("mesh (Contrast's annotations, copied here by contrast generate)")
    mesh.add_argument(
        "--ingress", default=env.get(mc.INGRESS_ENV), help=f"ingress rules (env {mc.INGRESS_ENV})"
    )
    mesh.add_argument("--egress", default=env.get(mc.EGRESS_ENV), help=f"egress rules (env {mc.EGRESS_ENV})")
    mesh.add_argument(
        "--verify-egress-san",
        default=env.get(mc.EGRESS_VERIFY_SAN_ENV, "true"),
        help="egress: the remote certificate must name the remote host "
        f"(env {mc.EGRESS_VERIFY_SAN_ENV}; default true)",
    )
    mesh.add_argument(
        "--tls-dir",
        type=Path,
        default=Path(env.get("CONTRAST_MESH_TLS_DIR", str(DEFAULT_TLS_DIR))),
        help="the initializer's tls-config directory (env CONTRAST_MESH_TLS_DIR; default %(default)s)",
    )
    mesh.add_argument(
        "--reload-interval",
        type=float,
        default=float(env.get("CONTRAST_MESH_RELOAD_INTERVAL", "2")),
        help="seconds between checks of the certificate files (env CONTRAST_MESH_RELOAD_INTERVAL)",
    )
    net = p.add_argument_group("network")
    net.add_argument(
        "--redirect",
        choices=[r.value for r in Redirect],
        default=env.get("CONTRAST_MESH_REDIRECT", Redirect.TPROXY.value),
        help="tproxy: transparent listeners and netfilter rules (in a pod); none: no netfilter, ingress "
        "through --forward (env CONTRAST_MESH_REDIRECT; default %(default)s)",
    )
    for flag, variable, metavar, text in (
        (
            "--forward",
            "CONTRAST_MESH_FORWARD",
            "PORT@HOST:PORT->HOST:PORT",
            "with --redirect none: serve pod port PORT on the first address, forward to the second",
        ),
        (
            "--resolve",
            "CONTRAST_MESH_RESOLVE",
            "HOST:PORT=ADDRESS:PORT",
            "connect to ADDRESS:PORT for an egress remote HOST:PORT (the certificate is checked for HOST)",
        ),
    ):
        net.add_argument(
            flag,
            action="append",
            default=_list(env.get(variable, "")),
            metavar=metavar,
            help=f"{text} (repeatable; env {variable}, comma-separated)",
        )
    net.add_argument(
        "--handshake-timeout", type=float, default=float(env.get("CONTRAST_MESH_HANDSHAKE_TIMEOUT", "10"))
    )
    net.add_argument(
        "--connect-timeout", type=float, default=float(env.get("CONTRAST_MESH_CONNECT_TIMEOUT", "10"))
    )
    net.add_argument(
        "--max-connections", type=int, default=int(env.get("CONTRAST_MESH_MAX_CONNECTIONS", "4096"))
    )
    admin = p.add_argument_group(
        f"admin interface (/metrics, /readyz, /livez; port from env {mc.ADMIN_PORT_ENV})"
    )
    add_process_arguments(admin, env, metrics_port_env=mc.ADMIN_PORT_ENV, metrics_addr_default="0.0.0.0")  # noqa: S104
    sub = p.add_subparsers(dest="command")
    deny = sub.add_parser("default-deny", help="install or remove the rule that drops inbound connections")
    deny.add_argument("action", choices=["install", "remove"])
    return p


def config_from_args(args: argparse.Namespace) -> SidecarConfig:
    mesh = mc.parse(args.ingress, args.egress, None, args.verify_egress_san)
    return SidecarConfig(
        mesh=mesh,
        process=process_config_from_args(args),
        tls_dir=args.tls_dir,
        redirect=Redirect(args.redirect),
        forwards=tuple(Forward.parse(f) for f in args.forward),
        resolve=dict(parse_resolve(r) for r in args.resolve),
        reload_interval=args.reload_interval,
        limits=Limits(
            handshake_timeout=args.handshake_timeout,
            connect_timeout=args.connect_timeout,
            max_connections=args.max_connections,
        ),
    )


async def run(config: SidecarConfig) -> int:
    async with stop_signals() as stop:
        stopped = asyncio.ensure_future(stop.wait())
        # Startup waits for the initializer's files: a SIGTERM meanwhile must end it, not wait behind it.
        entered = asyncio.Event()

        async def sidecar() -> None:
            async with serve(config):
                entered.set()
                await stop.wait()

        task = asyncio.ensure_future(sidecar())
        done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done and not entered.is_set():
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            _log.info("sidecar_stopped", during="startup")
        except (OSError, NetfilterError) as e:
            _log.error("sidecar_failed", error=type(e).__name__, detail=str(e)[:500])
            return 1
        finally:
            stopped.cancel()
    return 0


async def default_deny(action: str) -> int:
    try:
        netfilter = Netfilter.from_path()
        changed = await (
            netfilter.install_default_deny() if action == "install" else netfilter.remove_default_deny()
        )
    except NetfilterError as e:
        _log.error("default_deny_failed", action=action, detail=str(e)[:500])
        return 1
    _log.info(f"default_deny_{action}", changed=changed)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(SERVICE, args.replica or SERVICE, level=args.log_level)
    if args.command == "default-deny":
        return asyncio.run(default_deny(args.action))
    try:
        config = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))  # exits 2
    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
