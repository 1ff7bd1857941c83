"""Plugin agents on real nodes: node-side input validation, output defaults, per-agent concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from nmc.protocol.ddl import Input, Output
from nmc.protocol.status import Status
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.agents.rpcutil import RpcUtil
from nmc.services.loader import load_agents

PLUGINS = Path(__file__).parent / "plugins"
ONE = {"filter_expr": "identity(n1.test)", "expect": ["n1.test"], "timeout": 10}


def plugin_agents() -> list[type[Agent]]:
    return [a.cls for a in load_agents([PLUGINS], builtins=(RpcUtil,))]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) for a condition on the node's own state."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(("data", "status", "message"), [
    ({}, Status.MISSING_DATA, "missing required input 'person'"),
    ({"person": "bob; reboot"}, Status.INVALID_DATA, "input 'person' must not contain ';' (shellsafe)"),
    ({"person": "$(id)"}, Status.INVALID_DATA, "input 'person' must not contain '$' (shellsafe)"),
    ({"person": "x" * 65}, Status.INVALID_DATA, "input 'person' is longer than 64 characters"),
    ({"person": "bob", "times": "2"}, Status.INVALID_DATA, "input 'times' must be of type integer, got str"),
    ({"person": "bob", "loud": True}, Status.INVALID_DATA, "unknown input(s) for greet: loud"),
])
async def test_node_validates_inputs_whatever_the_client_sent(fleet, data: dict, status: Status,
                                                              message: str) -> None:
    await fleet.add("n1.test", {}, agents=plugin_agents())
    async with fleet.client() as fc:  # the library, not the CLI: nothing checked before sending
        result = await fc.call("hello", "greet", data, **ONE)
    [reply] = result.results
    assert (reply.status, reply.message) == (status, message)


async def test_node_fills_missing_outputs_with_their_defaults(fleet) -> None:
    await fleet.add("n1.test", {"role": "web", "cores": 8}, agents=plugin_agents())
    await fleet.add("n2.test", {}, agents=plugin_agents())
    async with fleet.client() as fc:
        result = await fc.call("hello", "greet", {"person": "ann", "times": 2}, filter_expr="",
                               expect=["n1.test", "n2.test"], timeout=10)
    data = {r.identity: dict(r.data) for r in result.results}
    assert data == {
        "n1.test": {"greeting": "hello ann hello ann", "role": "web", "cores": 8, "virtual": False},
        "n2.test": {"greeting": "hello ann hello ann", "role": "unknown", "cores": 0, "virtual": False},
    }


async def test_failed_action_data_gets_defaults_too(fleet) -> None:
    class Partial(Agent):
        name = "partial"

        @action("fails with part of its outputs",
                outputs=(Output("done", default=False), Output("step", default="none")))
        async def run(self, req: ActionRequest) -> Mapping[str, Any]:
            from nmc.services.agent import ActionFailed

            raise ActionFailed("stopped half way", data={"step": "download"})

    await fleet.add("n1.test", {}, agents=[RpcUtil, Partial])
    async with fleet.client() as fc:
        [reply] = (await fc.call("partial", "run", {}, **ONE)).results
    assert (reply.status, dict(reply.data)) == (Status.ABORTED, {"step": "download", "done": False})


def _gated_agent(gate: asyncio.Event, runs: list[dict[str, float]]) -> type[Agent]:
    class OneAtATime(Agent):
        name = "one_at_a_time"
        concurrency = 1

        @action("records when it ran; waits for the test's gate", inputs=(Input("n", "integer"),), timeout=30)
        async def work(self, req: ActionRequest) -> Mapping[str, Any]:
            run = {"n": req.data["n"], "start": time.time()}
            runs.append(run)
            await gate.wait()
            run["end"] = time.time()
            return run

        @action("gives up waiting for a slot quickly", timeout=0.3)
        async def quick(self, req: ActionRequest) -> Mapping[str, Any]:
            return {"ran": True}

    return OneAtATime


async def test_concurrency_limit_runs_actions_one_after_the_other_while_others_answer(fleet) -> None:
    gate = asyncio.Event()
    runs: list[dict[str, float]] = []
    node = await fleet.add("n1.test", {}, agents=[RpcUtil, _gated_agent(gate, runs)])
    async with fleet.client() as fc, fleet.client("bob") as fc2, fleet.client("carol") as fc3:
        first = asyncio.create_task(fc.call("one_at_a_time", "work", {"n": 1}, **ONE))
        await until(lambda: len(runs) == 1)
        second = asyncio.create_task(fc2.call("one_at_a_time", "work", {"n": 2}, **ONE))
        await until(lambda: node.pipeline.counters.passed == 2)  # the second request reached the node ...
        assert len(runs) == 1  # ... and waits for the slot instead of running

        ping = await fc3.call("rpcutil", "ping", {}, **ONE)  # other agents keep answering
        assert [(r.identity, r.status) for r in ping.results] == [("n1.test", Status.OK)]
        assert not first.done() and not second.done()

        gate.set()
        done = [(await first).results[0], (await second).results[0]]
    assert [r.status for r in done] == [Status.OK, Status.OK]
    one, two = (dict(r.data) for r in done)
    assert one["n"] == 1 and two["n"] == 2
    assert two["start"] >= one["end"], "the second run started before the first ended"


async def test_waiting_for_a_slot_is_bounded_by_the_action_timeout(fleet) -> None:
    gate = asyncio.Event()
    runs: list[dict[str, float]] = []
    await fleet.add("n1.test", {}, agents=[RpcUtil, _gated_agent(gate, runs)])
    async with fleet.client() as fc, fleet.client("bob") as fc2:
        holder = asyncio.create_task(fc.call("one_at_a_time", "work", {"n": 1}, **ONE))
        await until(lambda: len(runs) == 1)
        [busy] = (await fc2.call("one_at_a_time", "quick", {}, **ONE)).results
        assert (busy.status, busy.message) == (
            Status.UNKNOWN_ERROR, "agent one_at_a_time is busy: waited 0.3s for one of its 1 slot(s)")
        gate.set()
        assert (await holder).results[0].status == Status.OK
        [after] = (await fc2.call("one_at_a_time", "quick", {}, **ONE)).results  # the slot was given back
    assert (after.status, dict(after.data)) == (Status.OK, {"ran": True})


async def test_unlimited_agents_run_side_by_side(fleet) -> None:
    gate = asyncio.Event()
    started: list[int] = []

    class Many(Agent):
        name = "many"

        @action("waits for the gate", inputs=(Input("n", "integer"),))
        async def work(self, req: ActionRequest) -> Mapping[str, Any]:
            started.append(req.data["n"])
            await gate.wait()
            return {}

    await fleet.add("n1.test", {}, agents=[RpcUtil, Many])
    async with fleet.client() as fc, fleet.client("bob") as fc2:
        calls = [asyncio.create_task(c.call("many", "work", {"n": n}, **ONE)) for n, c in ((1, fc), (2, fc2))]
        await until(lambda: len(started) == 2)  # both run at once: concurrency 0 is no limit
        gate.set()
        results = [await c for c in calls]
    assert all(r.results[0].ok for r in results)
