"""Stopping a background task without ever waiting on it forever.

``task.cancel(); await task`` hangs when the task swallows its cancellation: on Python 3.11,
``asyncio.wait_for`` (which nats-py's requests use) loses a cancellation that arrives just as the awaited
reply does, and a polling loop that catches the resulting nothing carries on. :func:`stop_task` cancels
again until the task ends, within a bound, and then moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from contrast.runtime.logs import get_logger

_log = get_logger(__name__)
_RECANCEL = 0.1  # seconds between two cancellations of a task that did not end


async def stop_task(task: asyncio.Task[Any] | None, timeout: float = 2.0) -> bool:
    """Cancel ``task`` and wait (at most ``timeout``) until it has ended. False if it is still running."""
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            _log.warning("task_not_stopped", task=task.get_name(), timeout=timeout)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(_RECANCEL, left))
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()  # retrieved: an error of a stopped loop is of no further interest
    return True
