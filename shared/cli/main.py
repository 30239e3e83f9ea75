"""Entry point of the ``contrast`` command."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    raise SystemExit("contrast: no commands yet")
