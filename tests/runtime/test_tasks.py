"""stop_task (contrast.runtime.tasks): a task that swallows a cancellation, as a loop around Python 3.11's
``asyncio.wait_for`` can, is still stopped, within the bound; the control shows ``cancel(); await`` hang."""

from __future__ import annotations

import asyncio
import contextlib

from contrast.runtime.tasks import stop_task


async def _swallows_one_cancellation(swallowed: list[int]) -> None:
    while True:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(1)  # the lost cancellation: the loop carries on


async def test_a_task_that_swallows_a_cancellation_is_stopped() -> None:
    swallowed: list[int] = []
    task = asyncio.create_task(_swallows_one_cancellation(swallowed))
    await asyncio.sleep(0.01)
    assert await stop_task(task, timeout=2.0)
    assert task.cancelled()
    assert swallowed == [1]


async def test_control_cancel_then_await_waits_forever() -> None:
    swallowed: list[int] = []
    task = asyncio.create_task(_swallows_one_cancellation(swallowed))
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.5)
    assert not done  # still running after its one cancellation
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_finished_task_or_none_is_stopped_at_once() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await stop_task(task)
    assert await stop_task(None)
