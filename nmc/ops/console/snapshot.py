"""The console's cached registry read: one read of every node's record serves every page for a short while.

Reading the registry is one JetStream request per node and a check of each record: about
1.3 s for 5,000 nodes on a 2-core machine that also runs them (bench/console.py). Issue 18
wants the Fleet page of 5,000 nodes in under 1 s, so the console keeps the last read and
a page only filters and renders it:

- a read younger than `max_age` (2 s) is served as it is;
- an older one, up to `max_stale` (5 minutes), is served at once while one new read runs in
  the background (the next page shows it); the page says how old it is;
- with none, or an older one, the page waits for a new read.

Concurrent pages share one read. So that a page almost never waits and what it shows is
fresh, the console reads once when it starts, and then in the background: for `keep_warm`
(10 minutes) after each page whenever its read is `renew` (15 s) old, about one read every
15 s while someone uses it; when nobody has for 10 minutes, whenever it is `idle_renew`
(4 minutes) old, so the first page after a quiet hour still comes at once, from a read at
most a few minutes old (the registry's own records are up to `registerinterval` old, and a
gone node stays listed for three of them), and the next page is fresh. Idle, that is one
read of 5,000 records every 4 minutes (~1.8 s of one core, under 1 %). Every page says how
old its read is. This cache is the console's alone: `nmc ping`, `--dm registry` and the
other clients read the registry afresh.
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

__all__ = ["IDLE_RENEW", "KEEP_WARM", "MAX_AGE", "MAX_STALE", "RENEW", "CachedRead", "RegistryCache"]

MAX_AGE = 2.0  # seconds a read is shown without reading again
MAX_STALE = 300.0  # seconds an older read is still shown at once while a new one runs
KEEP_WARM = 600.0  # seconds after the last page during which reads are kept younger than RENEW
RENEW = 15.0  # while someone uses the console: read again when the read is this old
IDLE_RENEW = 240.0  # when nobody has for KEEP_WARM: read again when the read is this old
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
    keep_warm: float = KEEP_WARM  # 0: no background reads but the one a stale page starts
    renew: float = RENEW
    idle_renew: float = IDLE_RENEW  # 0: no background reads once nobody looked for keep_warm
    reads: int = 0  # reads started (tests and the bench see sharing in it)
    _last: CachedRead | None = None
    _pending: asyncio.Future[CachedRead] | None = field(default=None, repr=False)
    _last_view: float = 0.0
    _warmer: asyncio.Task[None] | None = field(default=None, repr=False)

    def warm(self) -> None:
        """Start a read now (the console starting), so that the first page need not wait for one."""
        self._start()
        self._viewed()

    async def get(self) -> CachedRead:
        """A read young enough to show (see the module doc); raises what the read raises when it must wait."""
        self._viewed()
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

    def _viewed(self) -> None:
        """A page was asked for: keep the read fresh for `keep_warm` seconds from now, then at the idle pace."""
        self._last_view = time.monotonic()
        if self.keep_warm > 0 and self.max_stale > 0 and (self._warmer is None or self._warmer.done()):
            self._warmer = asyncio.ensure_future(self._keep_warm())

    async def _keep_warm(self) -> None:
        """Read again whenever the read is `renew` old while pages come, `idle_renew` old after (0: stop)."""
        while True:
            in_use = time.monotonic() - self._last_view < self.keep_warm
            if not in_use and self.idle_renew <= 0:
                return
            renew = self.renew if in_use else self.idle_renew
            await asyncio.sleep(max(0.05, min(renew, self.renew) / 2))
            last = self._last
            if last is None or last.age() >= renew:
                self._start()  # a failure is logged (_retrieve) and tried again on the next turn

    async def _read(self) -> CachedRead:
        snapshot = await self.read()
        ordered = RegistrySnapshot(entries=tuple(sorted(snapshot.entries, key=lambda e: e.identity)),
                                   skipped=snapshot.skipped, elapsed=snapshot.elapsed,
                                   last_record=snapshot.last_record)
        self._last = CachedRead(ordered, time.time(), time.monotonic())
        return self._last

    async def close(self) -> None:
        """Stop the background reads and a read under way (the console is stopping)."""
        for task in (self._warmer, self._pending):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def _retrieve(future: asyncio.Future[CachedRead]) -> None:
    """Log a background read's failure (a page that waited for it gets the error itself)."""
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("console_registry_read_failed", reason=reason_of(exc))
