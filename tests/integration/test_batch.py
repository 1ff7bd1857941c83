"""--batch: at most N nodes run the action at once; the nodes' own clocks are the witness."""

from __future__ import annotations

import asyncio
import time

import pytest

from nmc.client.batch import call_in_batches, parse_batch
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.agents import BUILTIN_AGENTS


class Nap(Agent):
    """Sleeps a little and reports when it started and ended on the node."""

    name = "nap"

    @action("sleep 0.3 s")
    async def take(self, req: ActionRequest) -> dict:
        start = time.time()
        await asyncio.sleep(0.3)
        return {"start": start, "end": time.time()}


def max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    busy = peak = 0
    for _, delta in events:
        busy += delta
        peak = max(peak, busy)
    return peak


async def test_batches_keep_at_most_n_busy_and_every_node_runs_once(fleet):
    for i in range(1, 8):
        await fleet.add(f"b{i}.test", {}, agents=(*BUILTIN_AGENTS, Nap))
    seen = []
    async with fleet.client() as fc:
        result = await call_in_batches(fc, "nap", "take", {}, identities=[n.identity for n in fleet.nodes],
                                       size=3, on_batch=lambda done, total, part: seen.append((done, total)))
    spans = [(r.data["start"], r.data["end"]) for r in result.results]
    assert len(spans) == 7 and not result.no_response
    assert max_overlap(spans) <= 3
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert [n.pipeline.counters.passed for n in fleet.nodes] == [1] * 7


async def test_a_dead_node_does_not_stall_the_batch(fleet):
    for i in range(1, 5):
        await fleet.add(f"b{i}.test", {}, agents=(*BUILTIN_AGENTS, Nap))
    await fleet.node("b2.test").stop()
    async with fleet.client() as fc:
        started = time.monotonic()
        result = await call_in_batches(fc, "nap", "take", {}, identities=[n.identity for n in fleet.nodes],
                                       size=2, timeout=10)
    assert result.no_response == ("b2.test",)
    assert time.monotonic() - started < 5, "a disconnected node is known at once, not after the timeout"


@pytest.mark.parametrize(("spec", "total", "size"), [("3", 20, 3), ("25%", 20, 5), ("10%", 3, 1), ("100%", 7, 7)])
def test_parse_batch(spec, total, size):
    assert parse_batch(spec, total) == size


@pytest.mark.parametrize("bad", ["0", "-1", "x", "101%", "3.5"])
def test_parse_batch_rejects(bad):
    from nmc.client.batch import BatchError

    with pytest.raises(BatchError, match="--batch takes N or N%"):
        parse_batch(bad, 10)


class Slowpoke(Agent):
    """Slow on one node only; times out when asked to wait longer than its DDL allows."""

    name = "slowpoke"

    @action("slow on slow.test, instant elsewhere", timeout=0.5)
    async def go(self, req: ActionRequest) -> dict:
        if self.node.identity == "slow.test":
            await asyncio.sleep(5)  # longer than the DDL timeout: the node must cut it off
        return {"at": time.time()}


async def test_action_timeout_and_a_slow_node_does_not_delay_the_others(fleet):
    for name in ("fast1.test", "fast2.test", "slow.test"):
        await fleet.add(name, {}, agents=(*BUILTIN_AGENTS, Slowpoke))
    arrivals = {}
    async with fleet.client() as fc:
        fc.on_reply = lambda r: arrivals.setdefault(r.identity, r.elapsed)
        result = await fc.call("slowpoke", "go", {}, expect=["fast1.test", "fast2.test", "slow.test"], timeout=10)
    by_node = {r.identity: r for r in result.results}
    assert by_node["slow.test"].status == 5 and "timed out after 0.5s" in by_node["slow.test"].message
    assert by_node["fast1.test"].ok and by_node["fast2.test"].ok
    # The fast nodes' replies arrived long before the slow node's timeout ended.
    assert max(arrivals["fast1.test"], arrivals["fast2.test"]) < arrivals["slow.test"] - 0.3
