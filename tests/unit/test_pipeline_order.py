"""The order of the node's request steps (nmc/services/pipeline.py module doc), pinned case by case.

Every collaborator of `RequestPipeline` is a recording fake writing into one
list, so each case reads as the steps the node took, in order. No NATS and
no cryptography: the verifier, signer and sender are stand-ins; the point is
which step runs, which does not, and in what order.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import pytest

from nmc.authz.hooks import Decision
from nmc.protocol.audit import AuditRecord
from nmc.protocol.envelope import Request, new_request_id
from nmc.protocol.status import Status
from nmc.protocol.subjects import node_subject
from nmc.security import CERTIFICATE_HEADER, SIGNATURE_HEADER, ReplayCache, SecurityError
from nmc.security.names import inbox_prefix
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.facts import NodeFacts
from nmc.services.pipeline import PipelineSettings, RequestPipeline

ME = "node1.example.net"


class Steps(list[str]):
    """The steps taken, in order."""


class FakeVerifier:
    def __init__(self, steps: Steps) -> None:
        self.steps = steps

    def verify(self, body: bytes, signature: str | None, certificate: str | None, *, now: float) -> str:
        self.steps.append("authenticate")
        if signature != "good":
            raise SecurityError("signature does not verify")
        return "alice"


class RecordingReplay(ReplayCache):
    def __init__(self, steps: Steps) -> None:
        super().__init__()
        self.steps = steps

    def check(self, request_id: str, request_time: float, now: float) -> None:
        self.steps.append("replay check")
        super().check(request_id, request_time, now)

    def remember(self, request_id: str, caller: str, expires_at: float, now: float) -> bool:
        self.steps.append("remember")
        return super().remember(request_id, caller, expires_at, now)


@dataclass
class FakeAuthorizer:
    steps: Steps
    allow: bool = True

    async def authorize(self, *, caller: str, agent: str, action: str, identity: str, facts: Mapping[str, Any],
                        classes: Any, facts_version: int, request_id: str) -> Decision:
        self.steps.append("authorize")
        return Decision(self.allow, "test.policy:1", "allowed" if self.allow else "denied")


@dataclass
class FakeAuditor:
    steps: Steps
    records: list[AuditRecord] = field(default_factory=list)

    async def record(self, record: AuditRecord) -> None:
        self.steps.append(f"audit {record.phase}")
        self.records.append(record)


@dataclass
class FakeSigner:
    steps: Steps
    name: str = ME

    def headers(self, body: bytes) -> dict[str, str]:
        self.steps.append("sign")
        return {SIGNATURE_HEADER: "node", CERTIFICATE_HEADER: "node"}


class Counter(Agent):
    """Records its lookup (the pipeline asks for the handler) and its run."""

    name = "counter"

    def handler(self, action_name: str) -> Any:
        self.node.append("resolve")
        return super().handler(action_name)

    @action("count one run")
    async def bump(self, req: ActionRequest) -> dict[str, Any]:
        self.node.append("run")
        return {}


@dataclass
class Rig:
    steps: Steps
    pipeline: RequestPipeline
    auditor: FakeAuditor
    sent: list[tuple[str, bytes, Mapping[str, str]]]


def rig(*, allow: bool = True, role: str = "web") -> Rig:
    steps = Steps()
    sent: list[tuple[str, bytes, Mapping[str, str]]] = []

    async def send(subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        steps.append("send")
        sent.append((subject, body, headers))

    def snapshot() -> NodeFacts:
        steps.append("filter")  # the facts are read just before the filter is matched
        return NodeFacts(facts={"role": role})

    auditor = FakeAuditor(steps)
    pipeline = RequestPipeline(
        settings=PipelineSettings(identity=ME, collective="nmc"), verifier=FakeVerifier(steps),  # type: ignore[arg-type]
        agents={"counter": Counter(steps)}, snapshot=snapshot, replay=RecordingReplay(steps),  # type: ignore[arg-type]
        authorizer=FakeAuthorizer(steps, allow), auditor=auditor, signer=FakeSigner(steps), send=send)  # type: ignore[arg-type]
    steps.clear()  # building the pipeline looks agents up; only the request's steps count
    return Rig(steps, pipeline, auditor, sent)


def request(**over: Any) -> Request:
    fields: dict[str, Any] = dict(id=new_request_id(), collective="nmc", agent="counter", action="bump",
                                  caller="cert=alice", sender="t", time=time.time(), ttl=60, targets=(ME,),
                                  filter="role=web")
    fields.update(over)
    return Request(**fields)


INBOX = inbox_prefix("alice") + ".r1"
GOOD = {SIGNATURE_HEADER: "good", CERTIFICATE_HEADER: "alice"}
BAD = {SIGNATURE_HEADER: "forged", CERTIFICATE_HEADER: "alice"}
BEFORE_AUTHZ = ["authenticate", "replay check", "filter", "remember", "authorize", "audit decision"]


def handle(r: Rig, req: Request, headers: Mapping[str, str] = GOOD, reply_to: str = INBOX) -> Any:
    subject = node_subject("nmc", ME, req.agent, req.action)
    return asyncio.run(r.pipeline.handle(subject, req.to_bytes(), headers, reply_to))


@dataclass(frozen=True)
class Case:
    name: str
    steps: list[str]
    status: Status | None  # None: no answer at all
    message: str = ""  # the start of the reply's message
    over: dict[str, Any] = field(default_factory=dict)  # request fields
    allow: bool = True
    headers: Mapping[str, str] = field(default_factory=lambda: GOOD)
    reply_to: str = INBOX
    role: str = "web"


CASES = [
    Case("good request", [*BEFORE_AUTHZ, "resolve", "run", "audit result", "sign", "send"], Status.OK, "OK"),
    # Denied: the policy speaks before the agent is looked up, so the caller learns nothing about which
    # agents exist; nothing runs, the decision is audited and no result record follows.
    Case("denied", [*BEFORE_AUTHZ, "sign", "send"], Status.ABORTED, "not authorized: denied (test.policy:1)",
         allow=False),
    Case("denied, unknown agent", [*BEFORE_AUTHZ, "sign", "send"], Status.ABORTED, "not authorized",
         over={"agent": "nosuch", "filter": ""}, allow=False),
    Case("unknown agent, allowed caller", [*BEFORE_AUTHZ, "audit result", "sign", "send"], Status.UNKNOWN_ACTION,
         "unknown agent 'nosuch'", over={"agent": "nosuch", "filter": ""}),
    Case("unknown action, allowed caller", [*BEFORE_AUTHZ, "resolve", "audit result", "sign", "send"],
         Status.UNKNOWN_ACTION, "unknown action counter.nope", over={"action": "nope"}),
    Case("bad signature", ["authenticate", "sign", "send"], Status.INVALID_DATA, "security: signature does not verify",
         headers=BAD),
    Case("filtered out", ["authenticate", "replay check", "filter"], None, role="db"),
    Case("reply subject outside the caller's inbox", ["authenticate", "replay check"], None,
         reply_to=inbox_prefix("mallory") + ".r1"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_steps_run_in_order(case: Case) -> None:
    r = rig(allow=case.allow, role=case.role)
    outcome = handle(r, request(**case.over), case.headers, case.reply_to)
    assert r.steps == case.steps
    if case.status is None:
        assert outcome.reply is None and r.sent == []
        return
    assert outcome.reply is not None and outcome.reply.status == case.status
    assert outcome.reply.message.startswith(case.message)
    assert [s for s, _, _ in r.sent] == [case.reply_to]
    assert r.sent[0][1] == outcome.reply.to_bytes()  # the signed body is what was sent


def test_a_replay_stops_after_the_replay_check() -> None:
    r = rig()
    req = request()
    assert handle(r, req).reply.status == Status.OK
    r.steps.clear()
    again = handle(r, req)
    assert r.steps == ["authenticate", "replay check", "sign", "send"]
    assert again.reply.status == Status.INVALID_DATA and again.reply.message.startswith("security: ")


def test_the_result_record_carries_the_reply_status() -> None:
    r = rig()
    handle(r, request(action="nope"))
    decision, result = r.auditor.records
    assert (decision.phase, decision.allowed, decision.status) == ("decision", True, None)
    assert (result.phase, result.status) == ("result", int(Status.UNKNOWN_ACTION))
    assert result.duration_ms is not None and result.duration_ms >= 0


def test_a_reply_goes_out_only_after_its_result_record_was_handed_to_the_auditor() -> None:
    # The guarantee since issue 16: `record()` has returned for the result record (the JetStreamAuditor
    # has published it, acknowledgement tracked, or spooled it) before the reply is signed and sent; the
    # reply does not wait for the stream's acknowledgement (tests/integration/test_audit_node.py).
    r = rig()
    handed_over_when_sent: list[int] = []

    async def send(subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        handed_over_when_sent.append(len(r.auditor.records))

    r.pipeline.send = send
    handle(r, request())
    assert handed_over_when_sent == [2]  # decision and result were both handed over when the reply was published


def test_a_result_record_still_being_handed_over_holds_the_reply_back() -> None:
    # An auditor whose record() has not returned (e.g. spooling: the fsync) keeps the reply back.
    r = rig()
    release, entered = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def record(record: AuditRecord) -> None:
        if record.phase == "result":
            order.append("result handed over?")
            entered.set()
            await release.wait()
            order.append("result handed over")

    async def send(subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        order.append("send")

    async def scenario() -> None:
        subject = node_subject("nmc", ME, "counter", "bump")
        req = request()
        task = asyncio.create_task(r.pipeline.handle(subject, req.to_bytes(), GOOD, INBOX))
        await entered.wait()
        assert order == ["result handed over?"]  # the action ran, the reply waits
        release.set()
        await task

    r.auditor.record = record  # type: ignore[method-assign]
    r.pipeline.send = send
    asyncio.run(scenario())
    assert order == ["result handed over?", "result handed over", "send"]


def test_without_a_sender_nothing_is_signed_or_sent() -> None:
    r = rig()
    r.pipeline.send = None
    assert handle(r, request()).reply.status == Status.OK
    assert "sign" not in r.steps and "send" not in r.steps and r.steps[-1] == "audit result"


def test_a_sending_pipeline_needs_a_signer() -> None:
    async def send(subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="Signer"):
        RequestPipeline(settings=PipelineSettings(identity=ME, collective="nmc"), verifier=None,  # type: ignore[arg-type]
                        agents={}, snapshot=NodeFacts, send=send)
