"""FactRefresher on a real nats-server: interval refresh re-routes a node, failures keep the old facts."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import nats
from structlog.testing import capture_logs

from nmc.protocol.filter import combine
from nmc.services.factrefresh import FactRefresher
from nmc.services.facts import FactSources, NodeFacts
from nmc.services.node import Node


def write_atomically(path: Path, text: str) -> None:
    """Replace a facts file the way puppet does, so a refresh never reads it half-written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclass(eq=False)
class FactsWatcher:
    """A companion that hands the test every facts change, so tests wait on events instead of sleeping."""

    changes: asyncio.Queue[NodeFacts] = field(default_factory=asyncio.Queue)

    async def start(self, node: Node) -> None:
        pass

    async def facts_changed(self, node: Node) -> None:
        self.changes.put_nowait(node.facts)

    async def stop(self) -> None:
        pass


@dataclass(frozen=True)
class CountedSources(FactSources):
    """Real FactSources that also report each finished collection, to wait for the interval loop."""

    finished: asyncio.Queue[None] = field(default_factory=asyncio.Queue, compare=False)

    async def collect(self, version: int = 0) -> NodeFacts:
        try:
            return await super().collect(version)
        finally:
            self.finished.put_nowait(None)


async def found(fc, *facts: str, classes: tuple[str, ...] = ()) -> set[str]:
    return {r.identity for r in (await fc.discover(combine(facts=facts, classes=classes))).results}


def fact_endpoint(node: Node, fact: str):
    assert node.service is not None
    return next(ep for ep in node.service.endpoints if ep.metadata.get("fact") == fact)


async def start_node(fleet, identity: str, sources: FactSources, interval: float, *extra) -> tuple[Node, FactRefresher]:
    initial = await sources.collect()
    refresher = FactRefresher(sources, interval=interval)
    node = await fleet.add(identity, dict(initial.facts), initial.classes, companions=[refresher, *extra])
    return node, refresher


async def test_interval_refresh_moves_node_from_web_to_db(fleet, tmp_path: Path):
    facts_file = tmp_path / "facts.yaml"
    write_atomically(facts_file, "role: web\ncountry: de\n")
    watcher = FactsWatcher()
    node, _ = await start_node(fleet, "mover.test", FactSources(builtin=False, yaml_files=(facts_file,)), 0.2,
                               watcher)
    await fleet.add("stays.test", {"role": "web", "country": "de"})
    async with fleet.client(discovery_stall=0.2, discovery_timeout=2) as fc:
        assert await found(fc, "role=web") == {"mover.test", "stays.test"}
        country = fact_endpoint(node, "country")

        write_atomically(facts_file, "role: db\ncountry: de\n")
        changed = await asyncio.wait_for(watcher.changes.get(), timeout=10)
        assert changed.facts["role"] == "db" and changed.version == 1
        assert await found(fc, "role=db") == {"mover.test"}

        # role=web requests are routed by the broker, and no longer to the node that moved.
        before = node.pipeline.counters.total
        assert await found(fc, "role=web") == {"stays.test"}
        assert node.pipeline.counters.total == before
        assert await found(fc, "country=de") == {"mover.test", "stays.test"}
    # The subject that still applies kept its subscription: no gap while facts were swapped.
    assert fact_endpoint(node, "country") is country
    assert watcher.changes.empty()  # the later interval refreshes found nothing new


async def test_broken_yaml_keeps_old_facts_and_warns(fleet, tmp_path: Path):
    facts_file = tmp_path / "facts.yaml"
    write_atomically(facts_file, "role: web\n")
    node, refresher = await start_node(fleet, "broken.test", FactSources(builtin=False, yaml_files=(facts_file,)), 0)
    before = node.facts
    write_atomically(facts_file, "role: db\n  nested: [oops\n")
    with capture_logs() as logs:
        assert await refresher.refresh_now() is False
    assert node.facts is before
    [warning] = [e for e in logs if e["event"] == "facts_refresh_failed"]
    assert warning["log_level"] == "warning" and warning["identity"] == "broken.test"
    assert warning["source"] == str(facts_file) and "not valid YAML" in warning["reason"]
    async with fleet.client(discovery_stall=0.2) as fc:
        assert await found(fc, "role=web") == {"broken.test"}


async def test_interval_loop_survives_failures(fleet, tmp_path: Path):
    facts_file = tmp_path / "facts.yaml"
    write_atomically(facts_file, "role: web\n")
    sources = CountedSources(builtin=False, yaml_files=(facts_file,))
    watcher = FactsWatcher()
    node, _ = await start_node(fleet, "survivor.test", sources, 0.05, watcher)
    write_atomically(facts_file, "- not a mapping\n")
    with capture_logs() as logs:
        for _ in range(20):  # wait for the loop to fail twice on the broken file
            await asyncio.wait_for(sources.finished.get(), timeout=10)
            if sum(e["event"] == "facts_refresh_failed" for e in logs) >= 2:
                break
    assert sum(e["event"] == "facts_refresh_failed" for e in logs) >= 2
    assert node.facts.facts == {"role": "web"}
    write_atomically(facts_file, "role: db\n")
    changed = await asyncio.wait_for(watcher.changes.get(), timeout=10)
    assert changed.facts == {"role": "db"}


async def test_unchanged_refresh_does_not_resubscribe(fleet, tmp_path: Path):
    facts_file = tmp_path / "facts.yaml"
    write_atomically(facts_file, "role: web\ncountry: de\n")
    classes = tmp_path / "classes.txt"
    classes.write_text("nginx\n")
    watcher = FactsWatcher()
    sources = FactSources(builtin=True, yaml_files=(facts_file,), classes_file=classes)
    node, refresher = await start_node(fleet, "steady.test", sources, 0, watcher)
    assert node.service is not None
    endpoints = node.service.endpoints
    subscriptions = [ep.subscription for ep in endpoints]
    nc = await nats.connect(fleet.url)
    try:
        subject = f"$SRV.INFO.nmc-node.{node.service.id}"
        info_before = json.loads((await nc.request(subject, b"", timeout=5)).data)
        facts_before = node.facts
        assert await refresher.refresh_now() is False
        info_after = json.loads((await nc.request(subject, b"", timeout=5)).data)
    finally:
        await nc.drain()
    assert node.facts is facts_before and node.facts.version == 0
    assert all(a is b for a, b in zip(node.service.endpoints, endpoints, strict=True))
    assert [ep.subscription for ep in node.service.endpoints] == subscriptions
    assert info_after == info_before
    assert watcher.changes.empty()


async def test_classes_change_and_concurrent_refreshes_do_not_interleave(fleet, tmp_path: Path):
    classes = tmp_path / "classes.txt"
    classes.write_text("nginx\n")
    node, refresher = await start_node(fleet, "classy.test", FactSources(builtin=False, classes_file=classes), 0)
    classes.write_text("postgresql\n")
    # SIGHUP while the interval fires: the second refresh waits, then sees nothing new.
    assert sorted(await asyncio.gather(refresher.refresh_now(), refresher.refresh_now())) == [False, True]
    assert node.facts.version == 1 and node.facts.classes == ("postgresql",)
    async with fleet.client(discovery_stall=0.2) as fc:
        assert await found(fc, classes=("postgresql",)) == {"classy.test"}
        assert await found(fc, classes=("nginx",)) == set()
