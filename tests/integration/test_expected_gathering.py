"""Gathering that knows whom to expect: ping, find and rpc read the registry first (issue 16).

With registered nodes, `nmc ping` / `rpc` need neither a broadcast discovery
round nor a stall timer: one publish, and gathering ends on the last expected
reply. Every test sets a stall and timeouts far longer than the test may take,
so a command that ended it means gathering ended on the last expected reply;
registered nodes that stay silent are named.
"""

from __future__ import annotations

from typing import Any

from nmc.client.discovery import Targeting, discover
from nmc.client.run import ping, run_action
from nmc.services.companion import NodeHandle
from nmc.services.registry import RegistryPublisher, RegistrySettings

SLOW = 30.0  # stall and timeouts: a gathering that waited for any of them makes the test slow, and fails it


def facts_for(i: int) -> dict[str, Any]:
    return {"role": "web" if i % 2 else "db", "rank": i}


def registered() -> RegistryPublisher:
    return RegistryPublisher(RegistrySettings(interval=60))


async def start(fleet, n: int, *, register: bool = True) -> list:
    return [await fleet.add(f"node{i}.test", facts_for(i), companions=[registered()] if register else [])
            for i in range(1, n + 1)]


async def test_ping_ends_on_the_last_registered_reply_without_a_stall(fleet):
    await start(fleet, 8)
    async with fleet.client(discovery_stall=SLOW, discovery_timeout=SLOW, timeout=SLOW) as fc:
        result = await ping(fc, "")
    assert sorted(r.identity for r in result.results) == [f"node{i}.test" for i in range(1, 9)]
    assert result.discovered == tuple(sorted(f"node{i}.test" for i in range(1, 9)))
    assert result.no_response == ()
    assert result.elapsed < SLOW / 2  # not the stall, not the timeout: the last expected reply ended it


async def test_ping_names_a_registered_node_that_crashed(fleet):
    await start(fleet, 5)
    await fleet.node("node3.test").nc.close()  # a crash: its record stays until the TTL
    async with fleet.client(discovery_stall=SLOW) as fc:
        result = await ping(fc, "", timeout=1.0)
    assert result.no_response == ("node3.test",)
    assert len(result.results) == 4


async def test_ping_with_a_filter_expects_only_the_matching_registered_nodes(fleet):
    await start(fleet, 6)
    async with fleet.client(discovery_stall=SLOW, discovery_timeout=SLOW) as fc:
        result = await ping(fc, "role=web")
    assert sorted(r.identity for r in result.results) == ["node1.test", "node3.test", "node5.test"]
    assert result.discovered == ("node1.test", "node3.test", "node5.test")
    assert result.elapsed < SLOW / 2


async def test_without_registered_nodes_ping_and_discovery_broadcast(fleet):
    await start(fleet, 3, register=False)
    async with fleet.client(discovery_stall=0.3) as fc:
        result = await ping(fc, "")
        found = await discover(fc, "", Targeting())
    assert sorted(r.identity for r in result.results) == ["node1.test", "node2.test", "node3.test"]
    assert result.discovered is None  # nobody to expect: the stall ended it, nobody is named silent
    assert found.method == "broadcast" and sorted(found.identities) == ["node1.test", "node2.test", "node3.test"]


async def test_rpc_reads_the_registry_and_publishes_once_without_a_discovery_round(fleet):
    nodes = await start(fleet, 6)
    async with fleet.client(discovery_stall=SLOW, discovery_timeout=SLOW, timeout=SLOW) as fc:
        found = await discover(fc, "role=db", Targeting())
        result = await run_action(fc, "rpcutil", "ping", filter_expr="role=db")
    assert found.method == "registry" and not found.direct
    assert result is not None and sorted(r.identity for r in result.results) == ["node2.test", "node4.test",
                                                                                "node6.test"]
    assert result.elapsed < SLOW / 2
    # No discovery ping: each db node saw exactly one request (the rpc), the web nodes none.
    assert {n.identity: n.pipeline.counters.total for n in nodes} == {
        f"node{i}.test": (1 if i % 2 == 0 else 0) for i in range(1, 7)}


async def test_a_node_is_registered_before_it_subscribes_any_request_subject(fleet):
    seen: list[tuple[int, list[str]]] = []

    class Probe:
        """A companion started after the registry publisher: what exists when companions start."""

        def __init__(self, publisher: RegistryPublisher) -> None:
            self.publisher = publisher

        async def start(self, node: NodeHandle) -> None:
            assert node.service is not None
            seen.append((self.publisher.puts, [ep.subject for ep in node.service.endpoints]))

        async def facts_changed(self, node: NodeHandle) -> None:
            pass

        async def stop(self) -> None:
            pass

    publisher = registered()
    await fleet.add("early.test", {"role": "web"}, companions=[publisher, Probe(publisher)])
    assert seen == [(1, [])]  # the record was put; no request subject was subscribed yet
