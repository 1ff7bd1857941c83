"""Every kind of bad message, sent with raw nats-py (no nmc client code) to a running node and policy service.

For each: nothing runs, the reply carries the right status and a one-line
reason, the daemon logs why, and it keeps serving the next good request.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

import nats
import pytest
from structlog.testing import capture_logs

from nmc.authz.service import PolicyService, PolicyServiceSettings
from nmc.protocol.authz import AuthzAnswer
from nmc.protocol.ddl import Input
from nmc.protocol.envelope import Reply, Request, new_request_id
from nmc.protocol.status import Status
from nmc.protocol.subjects import authz_subject
from nmc.security import (  # revoked certificates: tests/integration/test_broker_security.py
    Signer,
    issue_certificate,
)
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.agents import BUILTIN_AGENTS
from nmc.security.names import inbox_prefix
from tests.integration.fleetkit import FleetCA

SUBJECT = "nmc.nmc.node.n1%2Etest.counter.bump"


class Counter(Agent):
    """Counts how often its action really ran."""

    name = "counter"
    runs: list[str] = []

    @action("count one run", inputs=(Input("n", "integer", optional=True),))
    async def bump(self, req: ActionRequest) -> dict:
        Counter.runs.append(req.request_id)
        return {"runs": len(Counter.runs)}


def body_of(caller: str = "cert=alice", **over) -> bytes:
    fields = dict(id=new_request_id(), collective="nmc", agent="counter", action="bump", caller=caller,
                  sender="t", time=time.time(), ttl=60, data={}, filter="", targets=("n1.test",))
    fields.update(over)
    return Request(**fields).to_bytes()


@pytest.fixture
async def node_and_nc(fleet):
    Counter.runs = []
    await fleet.add("n1.test", {"role": "web"}, agents=(*BUILTIN_AGENTS, Counter), max_request_bytes=4096)
    nc = await nats.connect(fleet.url, inbox_prefix=inbox_prefix("alice"))  # nodes answer only into the caller's inbox
    yield fleet, nc
    await nc.close()


async def ask(nc, subject: str, body: bytes, headers: dict | None) -> Reply:
    msg = await nc.request(subject, body, timeout=5, headers=headers)
    return Reply.from_bytes(msg.data)


def expired_signer(ca: FleetCA) -> Signer:
    from nmc.ops import pki

    ca_key, ca_cert = pki.load_ca(ca.directory)
    now = dt.datetime.now(dt.timezone.utc)
    key, cert = issue_certificate(ca_key, ca_cert, "alice", not_before=now - dt.timedelta(days=10),
                                  not_after=now - dt.timedelta(days=1))
    return Signer(key, cert)


async def test_every_kind_of_bad_request_runs_nothing_and_the_node_keeps_serving(node_and_nc, tmp_path):
    fleet, nc = node_and_nc
    alice = fleet.ca.signer("alice")
    good = body_of()
    signed = alice.headers(good)
    foreign = FleetCA(tmp_path / "other").signer("alice")
    other_key = FleetCA(tmp_path / "other2").signer("alice")
    replayed = body_of()
    await ask(nc, SUBJECT, replayed, alice.headers(replayed))  # first time: fine
    Counter.runs.clear()
    future = body_of(time=time.time() + 600)
    old = body_of(time=time.time() - 600)
    mismatch = body_of(caller="cert=bob")
    big = body_of(data={"blob": "x" * 5000})
    bad_input = body_of(data={"n": "not a number"})
    unknown_action = body_of(action="nosuch")
    expired = expired_signer(fleet.ca)
    cases = [
        # (label, subject, body, headers, status, words in the reason)
        ("not JSON", SUBJECT, b"\xff not json", signed, Status.INVALID_DATA, "JSON"),
        ("wrong shape", SUBJECT, b'{"protocol": "nmc.request.v2"}', signed, Status.INVALID_DATA, "no 'id' field"),
        ("missing headers", SUBJECT, good, None, Status.INVALID_DATA, "security:"),
        ("bad base64", SUBJECT, good, {"Nmc-Signature": "%%%", "Nmc-Certificate": "%%%"}, Status.INVALID_DATA,
         "security:"),
        ("signature from another key", SUBJECT, good,
         {"Nmc-Signature": other_key.sign(good), "Nmc-Certificate": alice.certificate_b64}, Status.INVALID_DATA,
         "signature"),
        ("certificate from another CA", SUBJECT, good, foreign.headers(good), Status.INVALID_DATA, "security:"),
        ("expired certificate", SUBJECT, good, expired.headers(good), Status.INVALID_DATA, "expired"),
        ("caller differs from certificate", SUBJECT, mismatch, alice.headers(mismatch), Status.INVALID_DATA,
         "does not match certificate"),
        ("replayed request", SUBJECT, replayed, alice.headers(replayed), Status.INVALID_DATA, "already seen"),
        ("request from the future", SUBJECT, future, alice.headers(future), Status.INVALID_DATA, "clock skew"),
        ("request too old", SUBJECT, old, alice.headers(old), Status.INVALID_DATA, "security:"),
        ("oversized body", SUBJECT, big, alice.headers(big), Status.INVALID_DATA, "exceeds the limit"),
        ("odd subject tokens", "nmc.nmc.node.n1%2Etest.counter.bu%5", good, signed, Status.INVALID_DATA,
         "subject token"),
        ("unknown action", SUBJECT.replace("bump", "nosuch"), unknown_action, alice.headers(unknown_action),
         Status.UNKNOWN_ACTION, "unknown action"),
        ("invalid inputs", SUBJECT, bad_input, alice.headers(bad_input), Status.INVALID_DATA, "must be of type integer"),
    ]
    for label, subject, body, headers, status, why in cases:
        with capture_logs() as logs:
            reply = await ask(nc, subject, body, headers)
        assert reply.status == status, (label, reply.status, reply.message)
        assert why in reply.message and "\n" not in reply.message, (label, reply.message)
        refused = [e for e in logs if e["event"] == "request_refused"]
        assert refused and why in refused[0]["reason"], (label, logs)
        assert Counter.runs == [], f"{label}: nothing may run"
        ok = body_of()
        assert (await ask(nc, SUBJECT, ok, alice.headers(ok))).status == Status.OK, f"serves after {label}"
        Counter.runs.clear()


async def test_the_policy_service_answers_garbage_with_an_error_and_keeps_serving(fleet, tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.policy").write_text("policy default allow\n")
    svc = PolicyService(PolicyServiceSettings(collective="nmc", policydir=policies, servers=(fleet.url,),
                                              poll_interval=0.05, reconnect_wait=0.1),
                        fleet.ca.signer("policy1"), fleet.ca.verifier())
    await svc.start()
    node = fleet.ca.signer("web1.test")
    nc = await nats.connect(fleet.url, inbox_prefix=inbox_prefix("web1.test"))  # answers go to the node's inbox
    try:
        for label, body in [("not JSON", b"\x00garbage"), ("wrong shape", b'{"protocol": "nmc.authz.v1"}'),
                            ("JSON array", b"[1, 2]")]:
            msg = await nc.request(authz_subject("nmc"), body, headers=node.headers(body), timeout=5)
            answer = json.loads(msg.data)
            assert answer["allowed"] is False and answer.get("error"), (label, answer)
            assert "\n" not in answer["reason"]
        bad_b64 = {"Nmc-Signature": "!!!", "Nmc-Certificate": base64.b64encode(b"junk").decode()}
        msg = await nc.request(authz_subject("nmc"), b"{}", headers=bad_b64, timeout=5)
        assert json.loads(msg.data)["allowed"] is False
        question = json.dumps({"protocol": "nmc.authz.v1", "request_id": "q", "caller": "cert=alice",
                               "agent": "rpcutil", "action": "ping", "identity": "web1.test", "facts": {},
                               "classes": []}).encode()
        msg = await nc.request(authz_subject("nmc"), question, headers=node.headers(question), timeout=5)
        assert AuthzAnswer.from_bytes(msg.data).allowed, "still serving good questions"
    finally:
        await nc.close()
        await svc.stop()
