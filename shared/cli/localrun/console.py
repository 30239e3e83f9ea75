"""The local runner's terminal output: numbered step lines, the live status line while it stays up, and with
``--jaeger`` the Jaeger address and one attestation's span tree."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from contrast.cli.localrun import jaeger
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

    def jaeger_started(self, j: jaeger.Jaeger, *, ui_embedded: bool) -> None:
        self.say(
            f"Jaeger      UI {j.ui_url}  (OTLP {j.otlp_endpoint}, pid {j.process.pid}, log {j.log_path})"
        )
        if not ui_embedded:
            self.say(
                f"{'':12}this Jaeger build has no UI assets (a build from the Go module has none): the page "
                f"is a placeholder; the API answers at {j.ui_url}/api/traces?service=contrast-initializer "
                "and the summary prints a trace"
            )

    def trace(self, j: jaeger.Jaeger, spans: Sequence[jaeger.TraceSpan], stored: int) -> None:
        """One attestation's span tree as Jaeger stored it (none: where to look instead)."""
        if not spans:
            self.say(f"traces        Jaeger holds {stored} initializer trace(s) so far: {j.ui_url}")
            return
        self.say(
            f"traces        {stored} attestation trace(s) in Jaeger; one of them, "
            f"{j.trace_url(spans[0].trace_id)}:"
        )
        for line in jaeger.render_tree(spans, jaeger.SHOWN_ATTRIBUTES):
            self.say(f"{'':14}{line}")

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
