"""The console's cached registry read: one read of every node's record serves every page for a short while.

Reading the registry is one JetStream request per node and a check of each record: about
1.3 s for 5,000 nodes on a 2-core machine that also runs them (bench/console.py). Issue 18
wants the Fleet page of 5,000 nodes in under 1 s, so the console keeps the last read and
a page only filters and renders it:

- a read younger than `max_age` (2 s) is served as it is;
- an older one, up to `max_stale` (30 s), is served at once while one new read runs in the
  background (the next page shows it);
- with none, or an older one, the page waits for a new read.

Concurrent pages share one read, and reads happen only while someone looks (no polling of
5,000 records while nobody does). Every page says how old its read is. This cache is the
console's alone: `nmc ping`, `--dm registry` and the other clients read the registry afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from nmc.client.registry import RegistrySnapshot
from nmc.errors import reason_of

__all__ = ["MAX_AGE", "MAX_STALE", "CachedRead", "RegistryCache"]

MAX_AGE = 2.0  # seconds a read is shown without reading again
MAX_STALE = 30.0  # seconds an older read is still shown at once while a new one runs
log = structlog.get_logger("nmc.console")


@dataclass(frozen=True)
class CachedRead:
    """One registry read, sorted by identity, and when it finished (wall clock, for the page)."""

    snapshot: RegistrySnapshot
    read_at: float  # time.time() when the read finished
    taken: float  # monotonic time when the read finished

    def age(self, now: float | None = None) -> float:
        """Seconds since the read finished."""
        return max(0.0, (time.monotonic() if now is None else now) - self.taken)


@dataclass
class RegistryCache:
    """The last registry read and at most one read under way; see the module doc for when it reads."""

    read: Callable[[], Awaitable[RegistrySnapshot]]
    max_age: float = MAX_AGE
    max_stale: float = MAX_STALE
    reads: int = 0  # reads started (tests and the bench see sharing in it)
    _last: CachedRead | None = None
    _pending: asyncio.Future[CachedRead] | None = field(default=None, repr=False)

    async def get(self) -> CachedRead:
        """A read young enough to show (see the module doc); raises what the read raises when it must wait."""
        last = self._last
        age = last.age() if last is not None else None
        if last is not None and age is not None and age <= self.max_age:
            return last
        pending = self._start()
        if last is not None and age is not None and age <= self.max_stale:
            return last
        # shield: a browser that goes away cancels its handler, not the read other pages wait for.
        return await asyncio.shield(pending)

    def _start(self) -> asyncio.Future[CachedRead]:
        """The read under way, or a new one."""
        if self._pending is None or self._pending.done():
            self.reads += 1
            self._pending = asyncio.ensure_future(self._read())
            self._pending.add_done_callback(_retrieve)
        return self._pending

    async def _read(self) -> CachedRead:
        snapshot = await self.read()
        ordered = RegistrySnapshot(entries=tuple(sorted(snapshot.entries, key=lambda e: e.identity)),
                                   skipped=snapshot.skipped, elapsed=snapshot.elapsed,
                                   last_record=snapshot.last_record)
        self._last = CachedRead(ordered, time.time(), time.monotonic())
        return self._last

    async def close(self) -> None:
        """Stop a read under way (the console is stopping)."""
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
            with contextlib.suppress(BaseException):
                await self._pending


def _retrieve(future: asyncio.Future[CachedRead]) -> None:
    """Log a background read's failure (a page that waited for it gets the error itself)."""
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("console_registry_read_failed", reason=reason_of(exc))
