"""cancel_and_wait: stops a background task, and never swallows the caller's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from nmc.transport.tasks import cancel_and_wait


async def test_the_task_is_cancelled_and_awaited():
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await started.wait()
    await cancel_and_wait(task)
    assert task.cancelled()
    await cancel_and_wait(None)  # nothing to stop


async def test_the_callers_cancellation_is_not_swallowed():
    """A stop() cancelled while it waits for a slow task must end, not carry on."""
    release = asyncio.Event()
    waiting = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            waiting.set()
            await release.wait()  # takes its time to wind down
            raise

    background = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)  # let it start
    stopper = asyncio.create_task(cancel_and_wait(background))
    await waiting.wait()
    stopper.cancel()  # e.g. a second Ctrl-C while stopping
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    assert background.cancelled()
