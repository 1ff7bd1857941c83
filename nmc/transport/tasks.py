"""Stopping background tasks: one helper for the cancel-then-wait every companion needs."""

from __future__ import annotations

import asyncio

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[object] | None) -> None:
    """Cancel `task` and wait until it has ended; None is a no-op.

    The task's own CancelledError is expected and dropped, but not the caller's: if the
    task calling this is itself being cancelled (Ctrl-C during a stop), the cancellation
    is re-raised instead of being swallowed, which would leave it waiting forever.
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
