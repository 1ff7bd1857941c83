"""The puppet agent's `puppet_run` event: a real `puppet apply` run started by `runonce` ends, the node says so.

The event is read off a real broker and checked with the same verifier readers
use (nmc.security.events), so what is asserted is a genuine, signed event. Its
counts are compared with the last_run_summary.yaml Puppet itself wrote.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from nmc.protocol.events import CloudEvent
from nmc.security.events import EventVerifier
from nmc.services.agents import BUILTIN_AGENTS
from nmc.services.agents.puppet import run_event_data
from nmc.services.events import EventPublisher, EventSettings
from tests.integration.fleetkit import Fleet, FleetCA
from tests.tools import needs_tool

_puppet = needs_tool("puppet")  # skipped with one line without puppet, failed in CI (tests/tools.py)


async def events_of(nats_url: str, test_ca: FleetCA, kind: str) -> tuple[Any, asyncio.Queue[CloudEvent]]:
    """A connection subscribed to nmc.events.>, queueing the verified events of `kind` (anything else fails)."""
    import nats

    nc = await nats.connect(nats_url)
    verifier = EventVerifier(test_ca.verifier(), role_names={"node": ["*.test"]})
    queue: asyncio.Queue[CloudEvent] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        event = verifier.check(msg.subject, msg.data, msg.headers)  # raises (and the test sees nothing) if forged
        if event.kind == kind:
            queue.put_nowait(event)

    await nc.subscribe("nmc.events.>", cb=on_msg)
    await nc.flush()
    return nc, queue


@pytest.mark.timeout(120)
async def test_a_finished_puppet_run_is_a_signed_puppet_run_event(fleet: Fleet, puppet_site, test_ca, nats_url):
    nc, runs = await events_of(nats_url, test_ca, "puppet_run")
    try:
        site = puppet_site.make("p1.test", sleep=0.2)
        await fleet.add("p1.test", {}, agents=BUILTIN_AGENTS, agent_settings={"puppet": site.settings()},
                        companions=[EventPublisher(EventSettings(alive_interval=0))])
        async with fleet.client() as fc:
            result = await fc.call("puppet", "runonce", {}, expect=["p1.test"], direct=True)
            assert result.results and result.results[0].ok, result
        event = await asyncio.wait_for(runs.get(), 90)
        summary = yaml.safe_load(site.summary.read_text())
        assert (event.identity, event.collective) == ("p1.test", "nmc")
        assert event.data["status"] == "ok" and event.data["exitcode"] == 0 and event.data["summary"] is True
        assert event.data["changed_resources"] == summary["resources"]["changed"] == 1
        assert event.data["failed_resources"] == 0
        assert 0 < event.data["duration_s"] < 90
    finally:
        await nc.close()


@pytest.mark.timeout(120)
async def test_a_failing_puppet_run_is_a_failed_event(fleet: Fleet, puppet_site, test_ca, nats_url):
    nc, runs = await events_of(nats_url, test_ca, "puppet_run")
    try:
        site = puppet_site.make("p2.test", sleep=0.1)
        site.manifest.write_text("exec { 'nmc-test-fails': command => 'exit 3', provider => shell }\n",
                                 encoding="utf-8")
        await fleet.add("p2.test", {}, agents=BUILTIN_AGENTS, agent_settings={"puppet": site.settings()},
                        companions=[EventPublisher(EventSettings(alive_interval=0))])
        async with fleet.client() as fc:
            result = await fc.call("puppet", "runonce", {}, expect=["p2.test"], direct=True)
            assert result.results and result.results[0].ok, result
        event = await asyncio.wait_for(runs.get(), 90)
        assert event.data["status"] == "failed" and event.data["summary"] is True
        assert event.data["failed_resources"] == 1 and event.data["changed_resources"] == 0
    finally:
        await nc.close()


def test_run_event_data_without_a_summary_of_this_run():
    stale = {"time": {"last_run": 100}, "resources": {"changed": 5, "failed": 2}}
    assert run_event_data(0, stale, 1.5, began=200.0) == {
        "status": "ok", "exitcode": 0, "summary": False, "changed_resources": 0, "failed_resources": 0,
        "duration_s": 1.5}
    assert run_event_data(-15, None, 0.2, began=200.0)["status"] == "failed"
    fresh = {"time": {"last_run": 201}, "resources": {"changed": 2, "failed": 0}, "events": {"failure": 0}}
    assert run_event_data(2, fresh, 3.0, began=200.0)["changed_resources"] == 2
