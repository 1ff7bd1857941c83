"""Events of the services: the policy service's `policy_reloaded`, the audit service's `audit_backlog`.

Each event is read off a real broker and checked with the verifier readers use
(nmc.security.events): it must be signed by a certificate with the kind's role.
Synchronisation is by the events themselves, every wait bounded.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from nmc.authz.service import PolicyService, PolicyServiceSettings
from nmc.protocol.events import CloudEvent
from nmc.security.events import EventRefused, EventVerifier
from tests.integration.fleetkit import FleetCA


class EventTap:
    """A connection subscribed to nmc.events.>: genuine events queued, refusals kept."""

    def __init__(self, nc: Any, verifier: EventVerifier) -> None:
        self.nc = nc
        self.verifier = verifier
        self.events: asyncio.Queue[CloudEvent] = asyncio.Queue()
        self.refused: list[str] = []

    @classmethod
    async def open(cls, url: str, ca: FleetCA) -> EventTap:
        import nats

        tap = cls(await nats.connect(url), EventVerifier(ca.verifier(), role_names={"node": ["*.test"]}))
        await tap.nc.subscribe("nmc.events.>", cb=tap._on_msg)
        await tap.nc.flush()
        return tap

    async def _on_msg(self, msg: Any) -> None:
        try:
            self.events.put_nowait(self.verifier.check(msg.subject, msg.data, msg.headers))
        except EventRefused as exc:
            self.refused.append(str(exc))

    async def next(self, kind: str, within: float = 15) -> CloudEvent:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            event = await asyncio.wait_for(self.events.get(), max(0.1, deadline - loop.time()))
            if event.kind == kind:
                return event

    async def close(self) -> None:
        await self.nc.close()


@pytest.mark.timeout(60)
async def test_policy_service_publishes_a_signed_policy_reloaded_event(nats_url: str, test_ca: FleetCA,
                                                                       tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rpcutil.policy").write_text("policy default deny\nallow\tcert=alice\t*\t*\n")
    signer = test_ca.signer("policy-a", roles=["policy"])
    service = PolicyService(PolicyServiceSettings(collective="nmc", policydir=policies, servers=(nats_url,),
                                                  poll_interval=0.1), signer, test_ca.verifier())
    tap = await EventTap.open(nats_url, test_ca)
    try:
        await service.start(give_up_after=10)
        first = await tap.next("policy_reloaded")
        assert (first.identity, first.collective, first.role) == ("policy-a", "nmc", "policy")
        assert first.data == {"policies": 1, "files": ["rpcutil.policy"], "errors": [], "reason": "start"}

        staged = policies / ".puppet.policy.new"
        staged.write_text("policy default deny\nallow\tcert=alice\tnot-an-action-list-or-bad\n")
        os.replace(staged, policies / "puppet.policy")
        changed = await tap.next("policy_reloaded")
        assert changed.data["reason"] == "changed" and changed.data["policies"] == 2
        assert changed.data["files"] == ["puppet.policy", "rpcutil.policy"]
        assert changed.data["errors"] and all(e.startswith("puppet.policy:2") for e in changed.data["errors"])
        assert tap.refused == []
    finally:
        await service.stop()
        await tap.close()


@pytest.mark.timeout(60)
async def test_policy_events_off(nats_url: str, test_ca: FleetCA, tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    signer = test_ca.signer("policy-b", roles=["policy"])
    service = PolicyService(PolicyServiceSettings(collective="nmc", policydir=policies, servers=(nats_url,),
                                                  events=False), signer, test_ca.verifier())
    tap = await EventTap.open(nats_url, test_ca)
    try:
        await service.start(give_up_after=10)
        await tap.nc.flush()
        # The reload notice to nodes still goes out; a round trip through the broker after it shows no event came.
        await service.nc.flush()
        await tap.nc.flush()
        assert tap.events.empty()
    finally:
        await service.stop()
        await tap.close()


# -- the audit service ---------------------------------------------------------------------------------------


def _audit_settings(tmp_path: Path, url: str, **kw: Any) -> Any:
    from nmc.audit.service import AuditServiceSettings

    return AuditServiceSettings(**{"file": tmp_path / "audit" / "audit.jsonl", "servers": (url,), **kw})


def _record(i: int) -> Any:
    from nmc.protocol.audit import AuditRecord

    return AuditRecord(phase="decision", request_id=f"req-{i}", request_time=1764072000.0 + i, caller="cert=alice",
                       sender="admin", identity="n1.test", collective="nmc", agent="rpcutil", action="ping",
                       time=1764072000.0 + i, nonce=f"{i:032x}")


def _lines(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.timeout(60)
async def test_audit_service_says_audit_backlog_above_the_threshold_and_once_back_under(nats_url: str,
                                                                                      test_ca: FleetCA,
                                                                                      tmp_path: Path):
    from nmc.audit.service import AuditService
    from nmc.audit.stream import ensure_stream
    from tests.integration.auditkit import caught_up, connect, publish_signed, trusting, until

    nc = await connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    node = test_ca.signer("n1.test")
    for i in range(12):  # stored before the service starts: it begins 12 records behind
        await publish_signed(js, _record(i), node)
    tap = await EventTap.open(nats_url, test_ca)
    service = AuditService(_audit_settings(tmp_path, nats_url, batch=2, backlog_warn=5, backlog_every=60),
                           trusting(test_ca), signer=test_ca.signer("audit-a", roles=["audit"]))
    try:
        await service.start(give_up_after=10)
        above = await tap.next("audit_backlog")
        assert (above.identity, above.role) == ("audit-a", "audit")
        assert above.data["above"] is True and above.data["threshold"] == 5 and above.data["pending"] >= 5
        under = await tap.next("audit_backlog")
        assert under.data["above"] is False and under.data["pending"] < 5
        await until(lambda: caught_up(nc, service.settings.position_path), 20, "the service to catch up")
        await tap.nc.flush()
        assert service.counters.backlog_events == 2 and tap.events.empty()  # none again while below
        assert service.counters.written == 12
    finally:
        await service.stop()
        await tap.close()
        await nc.close()


@pytest.mark.timeout(60)
async def test_audit_service_writes_verified_events_next_to_records(nats_url: str, test_ca: FleetCA, tmp_path: Path,
                                                                    fleet: Any):
    from nmc.audit.service import AuditService
    from nmc.audit.stream import ensure_stream
    from nmc.protocol.subjects import event_subject
    from nmc.services.events import EventPublisher, EventSettings
    from tests.integration.auditkit import connect, publish_signed, trusting, until

    nc = await connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    service = AuditService(_audit_settings(tmp_path, nats_url, events=True), trusting(test_ca),
                           event_verifier=EventVerifier(test_ca.verifier(), role_names={"node": ["*.test"]}))
    file = service.settings.file
    try:
        await service.start(give_up_after=10)
        # A forgery (web9's event signed by web2) first: counted, never written.
        forged = CloudEvent(kind="shutdown", collective="nmc", identity="web9.test",
                            data={"reason": "forged", "uptime_s": 1}, time=1764072000.0)
        body = forged.to_bytes()
        await nc.publish(event_subject("nmc", "shutdown", "web9.test"), body,
                         headers=test_ca.signer("web2.test").headers(body))
        await until(lambda: _async(service.counters.events_refused == 1), 10, "the forgery to be refused")
        await fleet.add("web1.test", {"role": "web"}, companions=[EventPublisher(EventSettings(alive_interval=0))])
        await publish_signed(js, _record(1), test_ca.signer("n1.test"))

        def both() -> bool:
            kinds = {(line.get("kind"), line.get("identity")) for line in _lines(file)}
            return {("event", "web1.test"), (None, "n1.test")} <= kinds

        await until(lambda: _async(both()), 15, "the startup event and the record in the audit file")
        [event] = [line for line in _lines(file) if line.get("kind") == "event"]
        assert event["type"] == "io.nmc.node.startup.v1" and event["collective"] == "nmc"
        assert event["event"]["data"]["facts"] == {"role": "web"} and event["time"] == event["event"]["time"]
        assert not any("forged" in json_text for json_text in file.read_text().splitlines())
        assert service.counters.events_written == 1
    finally:
        await service.stop()
        await nc.close()


async def _async(value: bool) -> bool:
    return value


def test_event_entries_in_the_mcollective_and_syslog_formats():
    from nmc.audit.formats import event_entry, line_msg_id, mcollective_line, syslog_message

    event = CloudEvent(kind="alive", collective="nmc", identity="web1.test", time=1764072000.0,
                       data={"uptime_s": 5, "interval_s": 60, "facts_version": 0})
    entry = event_entry(event.to_dict())
    line = mcollective_line(entry)
    assert line.startswith("[2025-11-25T12:00:00.000000Z] event=io.nmc.node.alive.v1 id=")
    assert line.endswith(" identity=web1.test") and line_msg_id(line) is None
    from nmc.audit.formats import json_line

    assert line_msg_id(json_line(entry)) is None  # never taken for a record when the file is read back
    message = syslog_message(entry).decode()
    assert message.startswith("<134>1 2025-11-25T12:00:00.000000Z web1.test nmc-audit - event - {")
