"""Helpers for tests that watch real child processes: JSON log lines and process exit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from typing import Any


def wait_for_log(proc: subprocess.Popen, event: str, timeout: float = 20, **fields: Any) -> dict:
    """The first JSON log line on the daemon's stderr with this event (and these field values)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
            return entry
    raise AssertionError(f"daemon never logged {event!r}")


async def gone(pid: int, within: float = 5.0) -> bool:
    """True once `pid` no longer runs (a zombie counts as gone), waiting on a pidfd rather than polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(True))
    try:
        await asyncio.wait({exited}, timeout=within)
        return exited.done()
    finally:
        loop.remove_reader(fd)
        os.close(fd)
