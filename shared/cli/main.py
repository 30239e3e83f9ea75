"""Entry point of the ``contrast`` command.

Each subcommand lives in its own module under ``contrast.cli`` and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (``Callable[[argparse.Namespace], int]``) as a default. Add a command by
adding its module name to ``COMMANDS``.

Exit codes shared by every command: 0 success/accepted, 1 rejected/refused (the reason is printed), 2 usage or
I/O error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

import structlog

from contrast.cli.exitcodes import EXIT_INTERRUPTED, EXIT_USAGE

COMMANDS: tuple[str, ...] = (
    "contrast.cli.evidence",
    "contrast.cli.generate",
    "contrast.cli.run",
    "contrast.cli.serve",
    "contrast.cli.set_manifest",
    "contrast.cli.verify",
    "contrast.cli.recover",
    "contrast.cli.sign",
    "contrast.cli.keygen",
)


def build_parser() -> argparse.ArgumentParser:
    # argparse itself exits with 2 (EXIT_USAGE) on a usage error.
    parser = argparse.ArgumentParser(
        prog="contrast", description="Contrast: attested confidential Kubernetes deployments."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(name)
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = module.register
        register(sub)
    return parser


def _library_logs_to_stderr() -> None:
    # structlog's default prints to stdout; a library warning (e.g. "emulated platform") would then corrupt
    # the one JSON object that `--json` promises on stdout. Services configure their own logging later.
    # The factory looks sys.stderr up on every logger creation, so a replaced stream (a test's capture, a
    # closed pipe) is never held on to.
    if not structlog.is_configured():
        structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))


def main(argv: list[str] | None = None) -> int:
    _library_logs_to_stderr()
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
