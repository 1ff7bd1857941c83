"""Requests that must run nothing, and replies the client must drop, on a real nats-server."""

from __future__ import annotations

import json
import time

import nats

from nmc.transport.compat import synced_flush
from structlog.testing import capture_logs

from nmc.protocol.envelope import Reply, Request, new_request_id
from nmc.protocol.status import Status
from nmc.protocol.subjects import node_subject
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.agents import BUILTIN_AGENTS
from nmc.security.names import inbox_prefix
from tests.integration.fleetkit import FleetCA


class Counter(Agent):
    """Counts how often its action really ran."""

    name = "counter"
    runs: list[str] = []

    @action("count one run")
    async def bump(self, req: ActionRequest) -> dict:
        Counter.runs.append(req.request_id)
        return {"runs": len(Counter.runs)}


def _request(caller: str, identity: str = "n1.test") -> Request:
    return Request(id=new_request_id(), collective="nmc", agent="counter", action="bump", caller=caller,
                   sender="test", time=time.time(), ttl=60, data={}, filter=f"identity({identity})",
                   targets=(identity,))


async def _send(url: str, body: bytes, headers: dict[str, str], caller: str = "alice") -> Reply:
    nc = await nats.connect(url, inbox_prefix=inbox_prefix(caller))  # nodes answer only into the caller's inbox
    try:
        msg = await nc.request(node_subject("nmc", "n1.test", "counter", "bump"), body, timeout=5, headers=headers)
    finally:
        await nc.close()
    return Reply.from_bytes(msg.data)


async def _still_serves(fleet) -> None:
    async with fleet.client() as fc:
        ok = await fc.call("counter", "bump", {}, filter_expr="identity(n1.test)", expect=["n1.test"])
    assert ok.results[0].status == Status.OK


async def test_bad_requests_run_nothing_are_logged_and_node_keeps_serving(fleet, tmp_path):
    Counter.runs = []
    await fleet.add("n1.test", {}, agents=(*BUILTIN_AGENTS, Counter))
    alice = fleet.ca.signer("alice")
    foreign = FleetCA(tmp_path / "other-ca").signer("alice")

    req = _request("cert=alice")
    body = req.to_bytes()
    tampered = body.replace(b'"sender":"test"', b'"sender":"evil"')
    mismatch = _request("cert=bob").to_bytes()
    cases = {
        "certificate from another CA": (body, foreign.headers(body), "security:"),
        "tampered body": (tampered, alice.headers(body), "signature"),
        "caller differs from certificate": (mismatch, alice.headers(mismatch), "does not match certificate"),
    }
    for label, (payload, headers, why) in cases.items():
        with capture_logs() as logs:
            reply = await _send(fleet.url, payload, headers)
        assert reply.status == Status.INVALID_DATA, label
        assert why in reply.message, (label, reply.message)
        assert "\n" not in reply.message
        refused = [e for e in logs if e["event"] == "request_refused"]
        assert refused and why in refused[0]["reason"], (label, logs)
        assert Counter.runs == [], f"{label}: the action must not run"
        await _still_serves(fleet)
        Counter.runs.clear()


async def test_replayed_request_is_refused(fleet):
    Counter.runs = []
    await fleet.add("n1.test", {}, agents=(*BUILTIN_AGENTS, Counter))
    alice = fleet.ca.signer("alice")
    body = _request("cert=alice").to_bytes()
    first = await _send(fleet.url, body, alice.headers(body))
    again = await _send(fleet.url, body, alice.headers(body))
    assert first.status == Status.OK
    assert again.status == Status.INVALID_DATA and "already seen" in again.message
    assert len(Counter.runs) == 1


async def test_client_drops_forged_replies_with_a_warning(fleet, tmp_path):
    await fleet.add("n1.test", {})
    forger = FleetCA(tmp_path / "evil-ca").signer("n2.test")
    impostor = fleet.ca.signer("n3.test")  # valid certificate, but claims another node's identity

    async def forge(msg):
        for signer, identity in ((forger, "n2.test"), (impostor, "n9.test")):
            req = json.loads(msg.data)
            reply = Reply(request_id=req["id"], identity=identity, status=Status.OK, message="OK",
                          time=time.time(), data={"pong": 1})
            body = reply.to_bytes()
            await nc.publish(msg.reply, body, headers=signer.headers(body))

    nc = await nats.connect(fleet.url)
    await nc.subscribe("nmc.nmc.all.rpcutil.ping", cb=forge)
    await synced_flush(nc)
    try:
        async with fleet.client(discovery_stall=0.3) as fc:
            with capture_logs() as logs:
                result = await fc.discover()
    finally:
        await nc.close()
    assert [r.identity for r in result.results] == ["n1.test"]
    assert result.dropped == 2
    warnings = [e for e in logs if e["event"] == "reply_dropped"]
    assert len(warnings) == 2 and all(e["log_level"] == "warning" for e in warnings)
    assert any("signed by 'n3.test'" in e["reason"] for e in warnings)


async def test_client_sees_why_a_node_refused(fleet, tmp_path):
    from nmc.client.fleet import ClientSettings, FleetClient

    await fleet.add("n1.test", {})
    nc = await nats.connect(fleet.url)
    try:
        fc = FleetClient(nc=nc, signer=FleetCA(tmp_path / "other").signer("mallory"),
                         verifier=fleet.ca.verifier(), settings=ClientSettings())
        result = await fc.call("rpcutil", "ping", {}, filter_expr="identity(n1.test)", expect=["n1.test"])
    finally:
        await nc.close()
    assert not result.no_response
    [reply] = result.results
    assert reply.status == Status.INVALID_DATA and reply.message.startswith("security:")
