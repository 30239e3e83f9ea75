"""The local runner's terminal output: numbered step lines, and the live status line while it stays up."""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import TextIO

from contrast.cli.localrun.metrics import Figures


class Console:
    """Prints what the run does, with the seconds since it started."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.started = time.monotonic()

    @property
    def is_terminal(self) -> bool:
        return self.out.isatty()

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, name: str, text: str) -> None:
        self.say(f"[{self.elapsed():5.1f}s] {name:<11} {text}")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def overwrite(self, line: str) -> None:
        """Replace the current terminal line (the live status)."""
        print(f"\r{line}\033[K", end="", file=self.out, flush=True)


def status_line(figures: Figures, queue_depth: str) -> str:
    """One line of the services' figures, refreshed while the run stays up."""
    ready = sum(figures.ready.values())
    rejected = int(sum(figures.rejections.values()))
    return (
        f"{dt.datetime.now().strftime('%H:%M:%S')}  ready {ready}/{len(figures.ready)}  "
        f"verifier queue {queue_depth}  attestations {int(sum(figures.attestations.values()))}  "
        f"rejected {rejected}  certificates {int(figures.certificates_issued)}  "
        f"generation {int(figures.manifest_generation)}  (Ctrl-C stops)"
    )
