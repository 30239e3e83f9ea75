"""structlog JSON logging with ``trace_id``, ``span_id``, ``service`` and ``replica`` on every line.

The stdlib loggers (nats-py logs through ``logging``) go through the same processors and JSON renderer via
``ProcessorFormatter``, so one replica emits one format. Logs go to stderr; stdout stays free for a CLI.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger


def _add_otel_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event


class _Identity:
    """Adds the replica's identity; a class so that tests can reconfigure logging in one process."""

    def __init__(self, service: str, replica: str) -> None:
        self.service, self.replica = service, replica

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("service", self.service)
        event.setdefault("replica", self.replica)
        return event


def configure_logging(
    service: str, replica: str, *, level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to one-line JSON on ``stream`` (default stderr)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _Identity(service, replica),
        _add_otel_ids,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.dict_tracebacks,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logging.basicConfig(handlers=[handler], level=level.upper(), force=True)


def get_logger(name: str, **bound: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger; ``bound`` values appear on every line it writes.

    The logger is a lazy proxy, so module-level loggers pick up :func:`configure_logging` done later in main.
    """
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **bound)
    return logger
