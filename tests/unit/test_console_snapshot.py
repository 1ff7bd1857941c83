"""The console's registry cache (nmc.ops.console.snapshot): when it reads, what pages share, what they wait for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from nmc.client.registry import RegistrySnapshot
from nmc.ops.console.snapshot import RegistryCache
from nmc.protocol.registry import RegistryEntry


def entry(identity: str) -> RegistryEntry:
    return RegistryEntry(identity=identity, collective="nmc", facts={}, classes=(), agents=(), last_seen=1.0)


class FakeRegistry:
    """A registry whose reads the test releases one by one; each read returns the nodes present at its end."""

    def __init__(self) -> None:
        self.nodes = ["b.example.net", "a.example.net"]
        self.gate = asyncio.Event()
        self.fail: Exception | None = None

    async def read(self) -> RegistrySnapshot:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return RegistrySnapshot(entries=tuple(entry(n) for n in self.nodes), skipped=0, elapsed=0.5, last_record=0.4)


async def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {within} s"
        await asyncio.sleep(0.01)


def identities(read: object) -> list[str]:
    return [e.identity for e in read.snapshot.entries]  # type: ignore[attr-defined]


async def test_concurrent_pages_share_one_read_and_get_it_sorted() -> None:
    fake = FakeRegistry()
    cache = RegistryCache(fake.read, max_age=60, keep_warm=0)
    pages = [asyncio.ensure_future(cache.get()) for _ in range(5)]
    await asyncio.sleep(0)
    fake.gate.set()
    reads = await asyncio.gather(*pages)
    assert cache.reads == 1
    assert all(r is reads[0] for r in reads)
    assert identities(reads[0]) == ["a.example.net", "b.example.net"]
    assert await cache.get() is reads[0] and cache.reads == 1  # young enough: no new read


async def test_an_old_read_is_shown_at_once_while_a_new_one_runs() -> None:
    fake = FakeRegistry()
    fake.gate.set()
    cache = RegistryCache(fake.read, max_age=0.0, max_stale=60, keep_warm=0)
    first = await cache.get()
    fake.nodes.append("c.example.net")
    fake.gate.clear()
    assert await cache.get() is first  # older than max_age: shown, and a read starts
    assert cache.reads == 2
    fake.gate.set()
    pending = cache._pending
    assert pending is not None
    await pending
    assert identities(await cache.get()) == ["a.example.net", "b.example.net", "c.example.net"]


async def test_a_read_older_than_max_stale_is_not_shown_the_page_waits() -> None:
    fake = FakeRegistry()
    fake.gate.set()
    cache = RegistryCache(fake.read, max_age=0.0, max_stale=0.0)
    await cache.get()
    fake.nodes.append("c.example.net")
    assert identities(await cache.get()) == ["a.example.net", "b.example.net", "c.example.net"]


async def test_a_failed_read_fails_the_pages_waiting_and_the_next_page_reads_again() -> None:
    fake = FakeRegistry()
    fake.fail = RuntimeError("no JetStream")
    fake.gate.set()
    cache = RegistryCache(fake.read, max_age=60, keep_warm=0)
    with pytest.raises(RuntimeError, match="no JetStream"):
        await cache.get()
    fake.fail = None
    assert identities(await cache.get()) == ["a.example.net", "b.example.net"]
    assert cache.reads == 2


async def test_a_page_that_goes_away_does_not_cancel_the_shared_read() -> None:
    fake = FakeRegistry()
    cache = RegistryCache(fake.read, max_age=60, keep_warm=0)
    gone = asyncio.ensure_future(cache.get())
    staying = asyncio.ensure_future(cache.get())
    await asyncio.sleep(0)
    gone.cancel()
    fake.gate.set()
    assert identities(await staying) == ["a.example.net", "b.example.net"]
    assert cache.reads == 1


async def test_the_console_start_reads_before_any_page() -> None:
    fake = FakeRegistry()
    fake.gate.set()
    cache = RegistryCache(fake.read, max_age=60)
    cache.warm()
    assert cache.reads == 1
    assert identities(await cache.get()) == ["a.example.net", "b.example.net"]
    assert cache.reads == 1  # the page used the start's read
    await cache.close()


async def test_after_a_page_the_read_is_kept_warm_in_the_background_then_left_alone() -> None:
    fake = FakeRegistry()
    fake.gate.set()
    cache = RegistryCache(fake.read, max_age=0.0, max_stale=0.2, keep_warm=0.6, renew=0.1, idle_renew=0)
    await cache.get()
    fake.nodes.append("c.example.net")
    await wait_for(lambda: cache.reads >= 3, 5, "background reads without pages")
    last = cache._last
    assert last is not None and [e.identity for e in last.snapshot.entries][-1] == "c.example.net"
    warmer = cache._warmer
    assert warmer is not None
    await wait_for(warmer.done, 5, "end of the background reads once no page came for keep_warm")
    await cache.close()


async def test_when_nobody_looks_the_read_is_renewed_at_the_idle_pace_and_served_at_once() -> None:
    fake = FakeRegistry()
    fake.gate.set()
    cache = RegistryCache(fake.read, max_age=0.0, max_stale=5.0, keep_warm=0.2, renew=0.1, idle_renew=0.6)
    await cache.get()
    await wait_for(lambda: time.monotonic() - cache._last_view > 0.3, 5, "the console going idle")
    idle_from = cache.reads
    fake.nodes.append("c.example.net")
    await wait_for(lambda: cache.reads > idle_from and cache._last is not None
                   and cache._last.snapshot.entries[-1].identity == "c.example.net", 5, "a read at the idle pace")
    warmer = cache._warmer
    assert warmer is not None and not warmer.done()  # idle reads go on
    fake.gate.clear()  # the next read would hang: the page must not wait for it
    page = await asyncio.wait_for(cache.get(), 2)
    assert [e.identity for e in page.snapshot.entries][-1] == "c.example.net"
    fake.gate.set()
    await cache.close()
