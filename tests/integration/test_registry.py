"""Registry discovery on a real nats-server with JetStream: nodes keep KV records, clients read them.

Nodes refresh every 0.5 s with a 2 s TTL so expiry is observable in a test;
every wait is a bounded poll on what a client would read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError
from structlog.testing import capture_logs

from nmc.client.discovery import DiscoveryError, Targeting, discover
from nmc.client.registry import RegistryError, read_registry, registry_discover
from nmc.ops.config.files import load_config
from nmc.ops.daemon.serve import build_node
from nmc.protocol.filter import combine
from nmc.protocol.registry import RegistryEntry, registry_key
from nmc.services.facts import NodeFacts
from nmc.services.registry import RegistryPublisher, RegistrySettings

COUNTRIES = ("us", "de", "uk", "us", "fr")
FLEET_SIZE = 32
INTERVAL, TTL = 0.5, 2.0


def facts_for(i: int) -> dict[str, Any]:
    return {"country": COUNTRIES[(i - 1) % 5], "role": "web" if i % 2 else "db", "rank": i}


def classes_for(i: int) -> list[str]:
    return ["base", "role::web" if i % 2 else "role::db"] + (["monitoring"] if i % 3 == 0 else [])


def publisher(**kw: Any) -> RegistryPublisher:
    return RegistryPublisher(RegistrySettings(**({"interval": INTERVAL, "ttl": TTL} | kw)))


async def start_fleet(fleet, n: int = FLEET_SIZE) -> list:
    return [await fleet.add(f"node{i}.test", facts_for(i), classes_for(i), companions=[publisher()])
            for i in range(1, n + 1)]


async def registered(nc, expr: str = "") -> set[str]:
    return {e.identity for e in await registry_discover(nc, "nmc", expr)}


async def poll(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    """True as soon as `check()` is; False if it never was within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


async def test_registry_discovery_finds_exactly_the_matching_nodes_without_a_request(fleet):
    nodes = await start_fleet(fleet)
    by_id = {n.identity: (n.facts.facts, n.facts.classes) for n in nodes}

    def want(pred: Callable[[dict, tuple, str], bool]) -> set[str]:
        return {ident for ident, (facts, classes) in by_id.items() if pred(facts, classes, ident)}

    cases = [
        ("", want(lambda f, c, i: True)),
        (combine(facts=["country=us"]), want(lambda f, c, i: f["country"] == "us")),
        (combine(classes=["monitoring"]), want(lambda f, c, i: "monitoring" in c)),
        ("rank>=20 and (country=de or role::web)", want(lambda f, c, i: f["rank"] >= 20 and
                                                           (f["country"] == "de" or "role::web" in c))),
        (combine(identities=["/^node1[0-9]\\./"]), want(lambda f, c, i: i.startswith("node1") and len(i) == 11)),
        ("not country=us and rank<5", want(lambda f, c, i: f["country"] != "us" and f["rank"] < 5)),
        ("country=nowhere", set()),
    ]
    async with fleet.client() as fc:
        for expr, expected in cases:
            assert expected or expr == "country=nowhere"
            found = await discover(fc, expr, Targeting(method="registry"))
            assert set(found.identities) == expected, expr
            assert found.method == "registry" and found.total == len(expected)
    assert len(by_id) == FLEET_SIZE
    # Nobody was asked: discovery read the bucket, no node saw a single request.
    assert [n.pipeline.counters.total for n in nodes] == [0] * FLEET_SIZE


async def test_rpc_to_registry_discovered_nodes_names_the_crashed_ones(fleet):
    nodes = await start_fleet(fleet)
    crashed = [fleet.node("node4.test"), fleet.node("node9.test")]
    for node in crashed:
        await node.nc.close()  # a crash: no companion stop, the records stay until the TTL
    async with fleet.client() as fc:
        found = await discover(fc, "", Targeting(method="registry"))
        assert len(found.identities) == FLEET_SIZE  # the registry still lists the crashed pair
        result = await fc.call("rpcutil", "ping", filter_expr="", expect=found.identities,
                               direct=found.direct, timeout=1.5)
    assert result.no_response == ("node4.test", "node9.test")
    assert {r.identity for r in result.results} == {n.identity for n in nodes} - {"node4.test", "node9.test"}
    assert all(r.ok for r in result.results)


async def test_clean_stop_deregisters_at_once_and_crash_expires_after_the_ttl(fleet):
    await start_fleet(fleet, 6)
    async with fleet.client() as fc:
        assert await registered(fc.nc) == {f"node{i}.test" for i in range(1, 7)}
        await fleet.node("node2.test").stop()
        # Deleted before stop() returned: no wait at all.
        assert "node2.test" not in await registered(fc.nc)

        await fleet.node("node3.test").nc.close()
        crashed_at = time.monotonic()
        assert "node3.test" in await registered(fc.nc)

        async def node3_gone() -> bool:
            return "node3.test" not in await registered(fc.nc)

        assert await poll(node3_gone, within=TTL + 5), "a crashed node's record never expired"
        # The live nodes refreshed their records meanwhile, so they outlived the TTL.
        assert time.monotonic() - crashed_at > INTERVAL
        assert await registered(fc.nc) == {"node1.test", "node4.test", "node5.test", "node6.test"}


async def test_live_nodes_outlive_the_ttl_by_refreshing(fleet):
    nodes = await start_fleet(fleet, 3)
    async with fleet.client() as fc:
        first = {e.identity: e.last_seen for e in (await read_registry(fc.nc, "nmc")).entries}

        async def all_refreshed() -> bool:
            entries = (await read_registry(fc.nc, "nmc")).entries
            return all(e.last_seen > first[e.identity] + TTL for e in entries) and len(entries) == 3

        assert await poll(all_refreshed, within=TTL + 5)
    assert all(n.companions[0].puts >= 3 for n in nodes)


async def test_facts_change_shows_in_the_registry_promptly(fleet):
    # A 60 s interval: only the re-put on facts_changed can make the change visible within the poll.
    for i in range(1, 4):
        await fleet.add(f"node{i}.test", facts_for(i), classes_for(i), companions=[publisher(interval=60, ttl=None)])
    node = fleet.node("node2.test")
    async with fleet.client() as fc:
        assert await registered(fc.nc, "country=de") == {"node2.test"}
        await node.update_facts(NodeFacts(facts={**node.facts.facts, "country": "se"}, classes=("sweden",),
                                          version=node.facts.version + 1))

        async def visible() -> bool:
            return await registered(fc.nc, "country=se and sweden") == {"node2.test"}

        assert await poll(visible, within=2.0)
        assert await registered(fc.nc, "country=de") == set()
        entry = next(e for e in (await read_registry(fc.nc, "nmc")).entries if e.identity == "node2.test")
    assert entry.facts_version == 1 and "rpcutil" in entry.agents


async def test_malformed_and_misplaced_records_are_skipped(fleet):
    await start_fleet(fleet, 3)
    nc = await nats.connect(fleet.url)
    try:
        kv = await nc.jetstream().key_value("nmc_registry")
        await kv.put(registry_key("nmc", "garbage"), b"{not json")
        # A well-formed record for node1 stored under another key must not pass as node1 (or as "imposter").
        imposter = RegistryEntry(identity="node1.test", collective="nmc", facts={"country": "xx"}, last_seen=time.time())
        await kv.put(registry_key("nmc", "imposter"), imposter.to_bytes())
        with capture_logs() as logs:
            snap = await read_registry(nc, "nmc")
            found = await registry_discover(nc, "nmc", "")
    finally:
        await nc.drain()
    assert {e.identity for e in snap.entries} == {"node1.test", "node2.test", "node3.test"}
    assert snap.skipped == 2
    assert {e.identity for e in found} == {"node1.test", "node2.test", "node3.test"}
    assert all(e.facts.get("country") != "xx" for e in found)
    skipped = [entry for entry in logs if entry["event"] == "registry_record_skipped"]
    assert {s["key"] for s in skipped} == {"nmc.garbage", "nmc.imposter"}


async def test_other_collectives_are_not_listed(fleet):
    await start_fleet(fleet, 2)
    fleet.collective = "staging"
    await fleet.add("stage1.test", {"country": "us"}, companions=[publisher()])
    async with fleet.client() as fc:
        assert await registered(fc.nc) == {"node1.test", "node2.test"}
        assert {e.identity for e in await registry_discover(fc.nc, "staging", "")} == {"stage1.test"}
        # An empty collective is an empty answer (a read that waited for records would raise on its timeout).
        assert await registry_discover(fc.nc, "empty", "", timeout=5) == []


async def test_max_age_drops_records_not_refreshed_recently(fleet):
    await start_fleet(fleet, 2)
    async with fleet.client() as fc:
        assert len(await registry_discover(fc.nc, "nmc", "", max_age=60)) == 2
        assert await registry_discover(fc.nc, "nmc", "", max_age=-1) == []


async def test_missing_bucket_is_a_one_line_hint(fleet):
    await fleet.add("plain.test", {})  # no registry companion: nobody made the bucket
    async with fleet.client() as fc:
        with pytest.raises(RegistryError) as info:
            await registry_discover(fc.nc, "nmc", "")
        with pytest.raises(DiscoveryError) as via_discover:
            await discover(fc, "", Targeting(method="registry"))
    assert str(info.value) == "no registry bucket 'nmc_registry': are the nodes started with registerinterval > 0?"
    assert info.value.bucket == "nmc_registry"
    assert via_discover.value.reason == str(info.value)


async def test_client_reads_the_configured_bucket(fleet):
    await fleet.add("n1.test", {}, companions=[publisher(bucket="other_registry")])
    async with fleet.client(registry_bucket="other_registry") as fc:
        assert (await discover(fc, "", Targeting(method="registry"))).identities == ("n1.test",)


async def test_nodes_starting_together_share_one_bucket(fleet):
    nodes = await asyncio.gather(*(fleet.add(f"n{i}.test", {}, companions=[publisher()]) for i in range(4)))
    assert all(n.companions[0].puts >= 1 for n in nodes)
    async with fleet.client() as fc:
        assert await registered(fc.nc) == {f"n{i}.test" for i in range(4)}


async def test_losing_the_create_race_uses_the_winners_bucket(fleet, monkeypatch):
    # The winner made the bucket with another TTL, so the loser's create is refused by the server.
    nc = await nats.connect(fleet.url)
    try:
        await nc.jetstream().create_key_value(bucket="nmc_registry", ttl=3.0, history=1)
    finally:
        await nc.drain()
    real_lookup = JetStreamContext.key_value
    misses: list[str] = []

    async def lookup_before_the_winner_created_it(self, bucket):
        if not misses:
            misses.append(bucket)
            raise BucketNotFoundError
        return await real_lookup(self, bucket)

    monkeypatch.setattr(JetStreamContext, "key_value", lookup_before_the_winner_created_it)
    node = await fleet.add("late.test", {}, companions=[publisher()])
    monkeypatch.undo()
    assert misses == ["nmc_registry"] and node.companions[0].puts == 1
    async with fleet.client() as fc:
        assert await registered(fc.nc) == {"late.test"}


async def test_deleted_bucket_is_recreated_by_the_nodes(fleet):
    await start_fleet(fleet, 3)
    async with fleet.client() as fc:
        await fc.nc.jetstream().delete_key_value("nmc_registry")
        with pytest.raises(RegistryError):
            await registry_discover(fc.nc, "nmc", "")

        async def back() -> bool:
            try:
                return await registered(fc.nc) == {"node1.test", "node2.test", "node3.test"}
            except RegistryError:
                return False

        # One failed put, then a re-create on the next tick (0.5 s): every node is back.
        assert await poll(back, within=5 * INTERVAL + 2)


async def test_node_without_jetstream_still_serves(nats_server_factory, test_ca):
    from tests.integration.fleetkit import Fleet

    broker = nats_server_factory(store_dir=None)
    fleet = Fleet(url=broker.url, ca=test_ca)
    try:
        with capture_logs() as logs:
            node = await fleet.add("lonely.test", {}, companions=[publisher()])
        assert any(e["event"] == "registry_put_failed" and e["log_level"] == "warning" for e in logs)
        async with fleet.client(discovery_stall=0.2) as fc:
            assert [r.identity for r in (await fc.discover()).results] == ["lonely.test"]
            with pytest.raises(RegistryError, match="JetStream"):
                await registry_discover(fc.nc, "nmc", "")
        assert node.companions[0].puts == 0
    finally:
        await fleet.stop()


async def test_build_node_wires_the_registry_from_config(fleet, nats_server, tmp_path: Path):
    fleet.ca.signer("cfg.test")
    ca = fleet.ca.directory
    cfg = tmp_path / "server.cfg"
    base = (f"identity = cfg.test\nplugin.nats.servers = {nats_server.url}\n"
            f"plugin.security.ca_file = {ca / 'ca.pem'}\n"
            f"plugin.security.cert_file = {ca / 'certs' / 'cfg.test.pem'}\n"
            f"plugin.security.key_file = {ca / 'private' / 'cfg.test.key'}\n")
    cfg.write_text(base + "registerinterval = 0\n")

    def publishers(node) -> list:
        return [c for c in node.companions if isinstance(c, RegistryPublisher)]

    assert publishers(await build_node(load_config(cfg, kind="server", env={}))) == []
    cfg.write_text(base + "registerinterval = 30\nplugin.registry.bucket = reg_cfg\n")
    node = await build_node(load_config(cfg, kind="server", env={}))
    [companion] = publishers(node)
    assert companion.settings == RegistrySettings(bucket="reg_cfg", interval=30.0)
    await node.start()
    try:
        async with fleet.client() as fc:
            found = await registry_discover(fc.nc, "nmc", "", bucket="reg_cfg")
        assert [e.identity for e in found] == ["cfg.test"]
        assert found[0].facts  # the built-in facts travel in the record
    finally:
        await node.stop()
