"""``contrast serve <service> [flags]``: the same as ``python -m contrast.<service> [flags]``."""

from __future__ import annotations

import argparse
import os
import sys

from contrast.cli.run import SERVICES


def serve(args: argparse.Namespace) -> int:
    module = f"contrast.{args.service}"
    # exec keeps the pid (signals from the supervisor reach the service directly).
    os.execv(sys.executable, [sys.executable, "-m", module, *args.service_args])  # noqa: S606


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run one service (python -m contrast.<service>)",
        description="Run one service in the foreground; flags after the name go to the service (see --help).",
    )
    p.add_argument("service", choices=[s.name for s in SERVICES])
    p.add_argument("service_args", nargs=argparse.REMAINDER, help="flags for the service")
    p.set_defaults(func=serve)
