"""The foundation's promises, end to end on a real nats-server: discovery, routing, rpc, no-response."""

from __future__ import annotations

import asyncio
import time

from nmc.protocol.filter import combine
from nmc.protocol.status import Status
from nmc.services.agents import BUILTIN_AGENTS

COUNTRIES = ("us", "de", "uk", "us", "fr")


def facts_for(i: int) -> dict:
    return {"country": COUNTRIES[(i - 1) % 5], "role": "web" if i % 2 else "db", "rank": i}


async def test_ping_gets_all_twenty(fleet):
    await fleet.add_many(20, facts_for)
    async with fleet.client(discovery_stall=0.2) as fc:
        result = await fc.discover()
    assert sorted(r.identity for r in result.results) == sorted(f"node{i}.test" for i in range(1, 21))
    assert all(r.ok for r in result.results)


async def test_fact_filter_reaches_only_matching_nodes(fleet):
    nodes = await fleet.add_many(20, facts_for)
    us = {n.identity for n in nodes if n.facts.facts["country"] == "us"}
    async with fleet.client(discovery_stall=0.2) as fc:
        expr = combine(facts=["country=us"])
        assert fc.subject_for(expr, "rpcutil", "ping") == "nmc.nmc.fact.country.us.rpcutil.ping"
        result = await fc.discover(expr)
    assert {r.identity for r in result.results} == us
    # The broker routed it: nodes outside the filter never received the request at all.
    for n in nodes:
        received = n.pipeline.counters.total
        assert received == (1 if n.identity in us else 0), n.identity


async def test_identity_filter_reaches_one_node(fleet):
    nodes = await fleet.add_many(5, facts_for)
    async with fleet.client() as fc:
        result = await fc.call("rpcutil", "get_fact", {"fact": "country"},
                               filter_expr=combine(identities=["node3.test"]), expect=["node3.test"])
    assert [(r.identity, r.data["value"]) for r in result.results] == [("node3.test", "uk")]
    assert [n.pipeline.counters.total for n in nodes] == [0, 0, 1, 0, 0]


async def test_broadcast_filter_is_evaluated_by_every_node(fleet):
    nodes = await fleet.add_many(10, facts_for)
    async with fleet.client(discovery_stall=0.2) as fc:
        result = await fc.discover("rank>=7 or country=de")
    want = {n.identity for n in nodes if n.facts.facts["rank"] >= 7 or n.facts.facts["country"] == "de"}
    assert {r.identity for r in result.results} == want


async def test_rpc_ends_when_every_discovered_node_answered(fleet):
    await fleet.add_many(8, facts_for)
    async with fleet.client(discovery_stall=0.2, timeout=10) as fc:
        found = await fc.discover()
        started = time.monotonic()
        result = await fc.call("rpcutil", "inventory", {}, expect=[r.identity for r in found.results])
        took = time.monotonic() - started
    assert len(result.results) == 8 and not result.no_response
    assert took < 5, "the rpc must end on the last expected reply, not at its 10 s timeout"
    inv = next(r for r in result.results if r.identity == "node1.test").data
    assert inv["agents"] == sorted(cls.name for cls in BUILTIN_AGENTS) and inv["facts"]["country"] == "us"


async def test_node_stopped_after_discovery_is_reported_as_no_response(fleet):
    await fleet.add_many(4, facts_for)
    async with fleet.client(discovery_stall=0.2) as fc:
        found = await fc.discover()
        assert len(found.results) == 4
        await fleet.node("node2.test").stop()
        started = time.monotonic()
        result = await fc.call("rpcutil", "ping", {}, expect=[r.identity for r in found.results], timeout=1.5)
        took = time.monotonic() - started
    assert result.no_response == ("node2.test",)
    assert len(result.results) == 3
    assert took < 3.0, "must end within its timeout"


async def test_unknown_agent_and_action_and_bad_input_get_status_codes(fleet):
    await fleet.add("n1.test", {"country": "us"})
    async with fleet.client() as fc:
        unknown_agent = await fc.call("nosuch", "thing", {}, filter_expr="identity(n1.test)", expect=["n1.test"])
        unknown_action = await fc.call("rpcutil", "nosuch", {}, filter_expr="identity(n1.test)", expect=["n1.test"])
        missing = await fc.call("rpcutil", "get_fact", {}, filter_expr="identity(n1.test)", expect=["n1.test"])
        invalid = await fc.call("rpcutil", "get_fact", {"fact": 5}, filter_expr="identity(n1.test)",
                                expect=["n1.test"])
        no_fact = await fc.call("rpcutil", "get_fact", {"fact": "nope"}, filter_expr="identity(n1.test)",
                                expect=["n1.test"])
    assert unknown_agent.results[0].status == Status.UNKNOWN_ACTION
    assert "unknown agent 'nosuch'" in unknown_agent.results[0].message
    assert unknown_action.results[0].status == Status.UNKNOWN_ACTION
    assert missing.results[0].status == Status.MISSING_DATA
    assert invalid.results[0].status == Status.INVALID_DATA
    assert no_fact.results[0].status == Status.ABORTED


async def test_slow_action_does_not_block_other_requests(fleet):
    from nmc.services.agent import ActionRequest, Agent, action
    from nmc.services.agents import BUILTIN_AGENTS

    gate = asyncio.Event()

    class Slow(Agent):
        name = "slow"

        @action("waits until the test opens the gate")
        async def wait(self, req: ActionRequest) -> dict:
            await gate.wait()
            return {"done": True}

    await fleet.add("n1.test", {}, agents=(*BUILTIN_AGENTS, Slow))
    async with fleet.client() as fc, fleet.client("bob") as fc2:
        slow = asyncio.create_task(fc.call("slow", "wait", {}, filter_expr="identity(n1.test)",
                                           expect=["n1.test"], timeout=10))
        fast = await fc2.call("rpcutil", "ping", {}, filter_expr="identity(n1.test)", expect=["n1.test"], timeout=3)
        assert [r.identity for r in fast.results] == ["n1.test"]
        assert not slow.done()
        gate.set()
        slow_result = await slow
    assert slow_result.results[0].data == {"done": True}


async def test_node_reconnects_after_broker_restart(fleet, nats_server):
    await fleet.add_many(3, facts_for)
    nats_server.restart()
    # The nodes reconnect on their own; poll discovery (bounded) until all three are back.
    deadline = time.monotonic() + 15
    seen: set[str] = set()
    while time.monotonic() < deadline and len(seen) < 3:
        async with fleet.client(discovery_stall=0.2, discovery_timeout=1) as fc:
            seen = {r.identity for r in (await fc.discover()).results}
    assert seen == {"node1.test", "node2.test", "node3.test"}


async def test_routed_requests_reach_list_and_numeric_facts(fleet):
    # Routing invariant: a fact-routed request must reach every node the filter matches,
    # including a list fact containing the value and a string "007" that equals 7 numerically.
    await fleet.add("list.test", {"roles": ["web", "db"], "slot": "007"})
    await fleet.add("plain.test", {"roles": "db", "slot": 7})
    await fleet.add("other.test", {"roles": "cache", "slot": 8})
    async with fleet.client(discovery_stall=0.2) as fc:
        assert fc.subject_for("roles=web", "rpcutil", "ping").startswith("nmc.nmc.fact.roles.web.")
        web = await fc.discover("roles=web")
        db = await fc.discover("roles=db")
        assert fc.subject_for("slot=7", "rpcutil", "ping").startswith("nmc.nmc.fact.slot.7.")
        seven = await fc.discover("slot=7")
    assert {r.identity for r in web.results} == {"list.test"}
    assert {r.identity for r in db.results} == {"list.test", "plain.test"}
    assert {r.identity for r in seven.results} == {"list.test", "plain.test"}
    assert fleet.node("other.test").pipeline.counters.total == 0


async def test_nested_facts_in_the_fact_index_are_routed(fleet):
    from nmc.protocol.factindex import FactIndex

    debian = await fleet.add("deb.test", {"os": {"family": "Debian", "release": {"major": "12"}}})
    redhat = await fleet.add("rh.test", {"os": {"family": "RedHat", "release": {"major": "9"}}})
    async with fleet.client(discovery_stall=0.2) as fc:
        assert fc.subject_for("os.family=Debian", "rpcutil", "ping") == "nmc.nmc.fact.os%2Efamily.Debian.rpcutil.ping"
        found = await fc.discover("os.family=Debian")
    assert {r.identity for r in found.results} == {"deb.test"}
    assert redhat.pipeline.counters.total == 0 and debian.pipeline.counters.total == 1
    # A path outside the shared index is broadcast, never routed.
    async with fleet.client(fact_index=FactIndex.parse("*")) as fc:
        assert fc.subject_for("os.family=Debian", "rpcutil", "ping") == "nmc.nmc.all.rpcutil.ping"
