"""Lifecycle events end to end: a node's startup, facts_changed and shutdown, seen by the real `nmc events watch`.

The watcher is the `nmc` command in a subprocess (`--json`, one CloudEvent per
line); each line is validated against a CloudEvents 1.0 JSON schema written
here from the specification (required attributes and their types, `time` as
RFC 3339). Synchronisation is by what the processes print: the watcher says
"watching ..." on standard error once subscribed; every read has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rfc3339_validator import validate_rfc3339

from nmc.protocol.events import CloudEvent
from nmc.protocol.subjects import event_subject
from nmc.security.events import EventVerifier
from nmc.services.events import EventPublisher, EventSettings
from nmc.services.facts import NodeFacts
from tests.integration.fleetkit import Fleet, FleetCA

NMC = [sys.executable, "-m", "nmc"]
# CloudEvents 1.0 (spec.md, "Required Attributes", "Optional Attributes"), JSON format (json-format.md).
CLOUDEVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1, "format": "uri-reference"},
        "type": {"type": "string", "minLength": 1},
        "time": {"type": "string", "minLength": 1},
        "datacontenttype": {"type": "string", "minLength": 1},
        "subject": {"type": "string", "minLength": 1},
        "data": {},
    },
    "propertyNames": {"pattern": "^[a-z0-9]{1,20}$"},  # attribute names: lower-case letters and digits
}


def assert_cloudevent(obj: dict[str, Any]) -> None:
    jsonschema.validate(obj, CLOUDEVENT_SCHEMA)
    assert validate_rfc3339(obj["time"]), obj["time"]
    assert obj["datacontenttype"] == "application/json" and isinstance(obj["data"], dict)
    assert obj["type"].startswith("io.nmc.") and obj["type"].endswith(".v1")


class Watcher:
    """`nmc events watch --json` as a subprocess; lines read with a deadline."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr: list[str] = []

    async def line(self, stream: asyncio.StreamReader, within: float) -> str:
        raw = await asyncio.wait_for(stream.readline(), within)
        assert raw, f"the watcher ended; stderr: {self.stderr}"
        return raw.decode().rstrip("\n")

    async def ready(self) -> None:
        assert self.proc.stderr is not None
        while True:
            text = await self.line(self.proc.stderr, 30)
            self.stderr.append(text)
            if text.startswith("watching "):
                return

    async def stderr_line(self, within: float = 10) -> str:
        assert self.proc.stderr is not None
        text = await self.line(self.proc.stderr, within)
        self.stderr.append(text)
        return text

    async def event(self, within: float = 10) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return json.loads(await self.line(self.proc.stdout, within))

    async def until(self, kind: str, identity: str, within: float = 15) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            obj = await self.event(max(0.1, deadline - asyncio.get_running_loop().time()))
            assert_cloudevent(obj)
            assert "verified" not in obj, obj  # only genuine events without --unverified
            if obj["type"] == f"io.nmc.node.{kind}.v1" and obj["subject"] == identity:
                return obj

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 10)


@pytest.fixture
def events_env(nats_url: str, tmp_path: Path, test_ca: FleetCA) -> dict[str, str]:
    """A client config: the broker, the fleet CA, and the test CA's (role-less) node certificates count as nodes."""
    cfg = tmp_path / "client.cfg"
    cfg.write_text(f"plugin.nats.servers = {nats_url}\nplugin.security.ca_file = {test_ca.directory / 'ca.pem'}\n"
                   "audit.node_names = *.test\n")
    return {**os.environ, "NMC_CONFIG": str(cfg), "HOME": str(tmp_path)}


async def start_watch(env: dict[str, str], *args: str) -> Watcher:
    proc = await asyncio.create_subprocess_exec(*NMC, "events", "watch", "--json", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    watcher = Watcher(proc)
    await watcher.ready()
    return watcher


@pytest.mark.timeout(90)
async def test_startup_facts_changed_and_shutdown_are_watched_as_cloudevents(fleet: Fleet, events_env):
    watcher = await start_watch(events_env)
    try:
        node = await fleet.add("web1.test", {"role": "web", "country": "de"},
                               companions=[EventPublisher(EventSettings(alive_interval=0))])
        startup = await watcher.until("startup", "web1.test")
        assert startup["source"] == "/nmc/nmc/node/web1.test"
        assert startup["data"]["facts"] == {"role": "web", "country": "de"}
        assert "rpcutil" in startup["data"]["agents"]

        await node.update_facts(NodeFacts(facts={"role": "db", "country": "de", "rack": "r1"}, version=1))
        changed = await watcher.until("facts_changed", "web1.test")
        assert changed["data"]["changed"] == ["rack", "role"]
        assert changed["data"]["facts"] == {"rack": "r1", "role": "db"}

        await node.stop()
        shutdown = await watcher.until("shutdown", "web1.test")
        assert shutdown["data"]["reason"] == "stopped" and shutdown["data"]["uptime_s"] >= 0
        assert len({startup["id"], changed["id"], shutdown["id"]}) == 3
    finally:
        await watcher.stop()


@pytest.mark.timeout(90)
async def test_forged_events_are_not_shown_as_genuine(fleet: Fleet, events_env, test_ca: FleetCA, nats_url: str):
    import nats

    watcher = await start_watch(events_env)
    nc = await nats.connect(nats_url)
    try:
        claim = CloudEvent(kind="startup", collective="nmc", identity="web1.test",
                           data={"version": "x", "agents": [], "classes": [], "facts": {}, "facts_version": 0},
                           time=1764072000.0)
        body = claim.to_bytes()
        subject = event_subject("nmc", "startup", "web1.test")
        await nc.publish(subject, body)  # unsigned
        assert "missing Nmc-Signature header" in await watcher.stderr_line()
        await nc.publish(subject, body, headers=test_ca.signer("web2.test").headers(body))  # another node's key
        assert "signed by 'web2.test'" in await watcher.stderr_line()
        # web2's own event, but on web1's subject.
        own = CloudEvent(kind="startup", collective="nmc", identity="web2.test", data=claim.data, time=claim.time)
        own_body = own.to_bytes()
        await nc.publish(subject, own_body, headers=test_ca.signer("web2.test").headers(own_body))
        assert "on the event subject of 'web1.test'" in await watcher.stderr_line()
        # A genuine one comes through, and is the first line on standard output.
        await fleet.add("web3.test", {}, companions=[EventPublisher(EventSettings(alive_interval=0))])
        first = await watcher.event(15)
        assert_cloudevent(first)
        assert (first["subject"], first["type"]) == ("web3.test", "io.nmc.node.startup.v1")
    finally:
        await nc.close()
        await watcher.stop()


@pytest.mark.timeout(60)
async def test_watch_filters_by_facts_and_type(fleet: Fleet, events_env):
    watcher = await start_watch(events_env, "-F", "role=db", "--type", "startup")
    try:
        await fleet.add("web1.test", {"role": "web"}, companions=[EventPublisher(EventSettings(alive_interval=0))])
        await fleet.add("db1.test", {"role": "db"}, companions=[EventPublisher(EventSettings(alive_interval=0))])
        first = await watcher.event(15)
        assert (first["subject"], first["type"]) == ("db1.test", "io.nmc.node.startup.v1")
    finally:
        await watcher.stop()


async def test_alive_events_every_interval(fleet: Fleet, test_ca: FleetCA, nats_url: str):
    import nats

    nc = await nats.connect(nats_url)
    verifier = EventVerifier(test_ca.verifier(), role_names={"node": ["*.test"]})
    alive: asyncio.Queue[CloudEvent] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        event = verifier.check(msg.subject, msg.data, msg.headers)
        if event.kind == "alive":
            alive.put_nowait(event)

    await nc.subscribe("nmc.events.>", cb=on_msg)
    await nc.flush()
    try:
        await fleet.add("web1.test", {}, companions=[EventPublisher(EventSettings(alive_interval=0.2))])
        first, second = await asyncio.wait_for(alive.get(), 10), await asyncio.wait_for(alive.get(), 10)
        assert first.identity == "web1.test" and second.data["uptime_s"] > first.data["uptime_s"]
        assert first.data["interval_s"] == 0.2
    finally:
        await nc.close()


@pytest.mark.timeout(90)
async def test_nmc_events_stream_keeps_events_and_query_reads_them(fleet: Fleet, events_env, nats_url: str):
    import nats

    from nmc.ops.broker.jetstream import JetStreamSetup, setup_jetstream

    nc = await nats.connect(nats_url)
    try:
        result = await setup_jetstream(nc.jetstream(), JetStreamSetup(events_max_age=3600.0,
                                                                       events_max_bytes=8 * 1024 * 1024))
        assert result.events is not None
        config = result.events.config
        assert (config.name, config.subjects, config.max_age, config.max_bytes) == (
            "NMC_EVENTS", ["nmc.events.>"], 3600.0, 8 * 1024 * 1024)
        node = await fleet.add("web1.test", {"role": "web"},
                               companions=[EventPublisher(EventSettings(alive_interval=0))])
        await node.stop()
        js = nc.jetstream()
        deadline = asyncio.get_running_loop().time() + 10
        while (await js.stream_info("NMC_EVENTS")).state.messages < 2:  # startup and shutdown, stored
            assert asyncio.get_running_loop().time() < deadline, "NMC_EVENTS did not store the events"
            await asyncio.sleep(0.05)
        # A forgery in the stream is not shown as genuine.
        await nc.publish(event_subject("nmc", "alive", "web1.test"), b'{"specversion":"1.0"}')
        while (await js.stream_info("NMC_EVENTS")).state.messages < 3:
            assert asyncio.get_running_loop().time() < deadline, "NMC_EVENTS did not store the forgery"
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    proc = await asyncio.create_subprocess_exec(*NMC, "events", "query", "--since", "1h", "--json", env=events_env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.decode().splitlines()]
    for obj in lines:
        assert_cloudevent(obj)
    assert [(o["type"], o["subject"]) for o in lines] == [("io.nmc.node.startup.v1", "web1.test"),
                                                           ("io.nmc.node.shutdown.v1", "web1.test")]
    assert "1 event(s) in NMC_EVENTS not shown" in err.decode()
    only = await asyncio.create_subprocess_exec(*NMC, "events", "query", "--type", "shutdown", env=events_env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(only.communicate(), 60)
    assert only.returncode == 0, err
    [text] = out.decode().splitlines()
    assert " web1.test shutdown stopped after " in text
