"""JetStreamAuditor's acknowledgement tracking (nmc/audit/publisher.py), against a fake connection.

The fake takes publishes and lets each test answer them as the stream would (an
acknowledgement, an error, a "no responders" status) or not at all, so every
way out of "in flight" is exercised without a broker; tests/integration/
test_audit_node.py does the same against a real nats-server.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from nmc.audit.hooks import AuditUnavailable
from nmc.audit.publisher import AuditSettings, JetStreamAuditor
from nmc.protocol.audit import AuditRecord

pytestmark = pytest.mark.timeout(30)


@dataclass
class Msg:
    subject: str
    data: bytes = b""
    headers: dict[str, str] | None = None


@dataclass
class FakeConnection:
    """What the auditor uses of nats-py's Client; publishes are kept for the test to answer."""

    published: list[tuple[str, bytes, str]] = field(default_factory=list)
    hold: asyncio.Event | None = None  # set: publish() waits for it (a flush that takes a while)
    sent: asyncio.Event = field(default_factory=asyncio.Event)  # set by the first publish
    cb: Any = None
    is_connected: bool = True

    def new_inbox(self) -> str:
        return "_INBOX.n1.abc"

    def jetstream(self, timeout: float) -> FakeJetStream:
        return FakeJetStream()

    async def subscribe(self, subject: str, cb: Any) -> Any:
        assert subject == "_INBOX.n1.abc.*"
        self.cb = cb
        return self

    async def unsubscribe(self) -> None:
        self.cb = None

    async def publish(self, subject: str, payload: bytes, reply: str = "", headers: Any = None) -> None:
        self.published.append((subject, payload, reply))
        self.sent.set()
        if self.hold is not None:
            await self.hold.wait()

    async def answer(self, index: int, body: dict[str, Any] | None = None, status: str | None = None) -> None:
        reply = self.published[index][2]
        data = json.dumps(body).encode() if body is not None else b""
        await self.cb(Msg(reply, data, {"Status": status} if status else None))


class FakeJetStream:
    """Resends from the spool (the resend loop) find no stream: records stay in the spool."""

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise nats.errors.NoRespondersError


class FakeSigner:
    def headers(self, body: bytes) -> dict[str, str]:
        return {"Nmc-Signature": "s", "Nmc-Certificate": "c"}


@dataclass
class View:
    nc: FakeConnection
    identity: str = "n1"
    collective: str = "nmc"
    signer: FakeSigner = field(default_factory=FakeSigner)


ACK = {"stream": "NMC_AUDIT", "seq": 1}


def record(i: int, phase: str = "result") -> AuditRecord:
    return AuditRecord(phase=phase, request_id=f"r{i}", request_time=0.0, caller="cert=a", sender="t", identity="n1",
                       collective="nmc", agent="rpcutil", action="ping", time=1764072000.0 + i)


async def started(tmp_path: Path, **kw: Any) -> tuple[JetStreamAuditor, FakeConnection]:
    auditor = JetStreamAuditor(AuditSettings(spool=tmp_path / "n1.spool", ack_timeout=kw.pop("ack_timeout", 0.2),
                                             create_stream=False, **kw))
    nc = FakeConnection()
    await auditor.start(View(nc))  # type: ignore[arg-type]
    return auditor, nc


def spooled(auditor: JetStreamAuditor) -> list[str]:
    return [json.loads(line)["msg_id"] for line in auditor.settings.spool.read_text().splitlines()]


async def test_record_returns_before_the_acknowledgement_and_an_ack_settles_it(tmp_path: Path) -> None:
    auditor, nc = await started(tmp_path, ack_timeout=30)
    await auditor.record(record(1))
    assert auditor.in_flight == 1 and auditor.published == 0
    await nc.answer(0, ACK)
    assert auditor.in_flight == 0 and auditor.published == 1 and len(auditor.spool) == 0
    await auditor.stop()


async def test_refusals_and_silence_put_records_in_the_spool_in_order(tmp_path: Path) -> None:
    auditor, nc = await started(tmp_path)
    records = [record(i) for i in range(4)]
    for r in records:
        await auditor.record(r)
    await nc.answer(0, {"error": {"code": 400, "description": "maximum messages exceeded"}})
    await nc.answer(1, status="503")  # no stream takes the subject
    await nc.answer(2, {"type": "io.nats.jetstream.api.v1.stream_info_response"})  # not an acknowledgement
    await auditor.settle()  # the fourth: no answer within ack_timeout
    assert spooled(auditor) == [r.msg_id for r in records] and auditor.published == 0 and auditor.in_flight == 0
    await nc.answer(3, ACK)  # too late: it is in the spool already, and its resend is a duplicate
    assert auditor.published == 0
    await auditor.stop()


async def test_records_after_a_failure_go_to_the_spool_directly(tmp_path: Path) -> None:
    auditor, nc = await started(tmp_path)
    one, two = record(1), record(2)
    await auditor.record(one)
    await nc.answer(0, status="503")
    await auditor.settle()
    await auditor.record(two)
    assert len(nc.published) == 1  # not published: the spool holds records, so it queues behind them
    assert spooled(auditor) == [one.msg_id, two.msg_id]
    await auditor.stop()


async def test_a_required_decision_record_is_kept_before_record_returns(tmp_path: Path) -> None:
    auditor, nc = await started(tmp_path, required=True)
    waiting = asyncio.create_task(auditor.record(record(1, "decision")))
    await nc.sent.wait()
    assert not waiting.done()  # no acknowledgement yet: the action may not run
    await nc.answer(0, ACK)
    await waiting
    await auditor.record(record(2, "result"))  # a result record is only handed over
    assert auditor.in_flight == 1
    await auditor.stop()


async def test_a_required_decision_record_neither_stream_nor_spool_took_raises(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    auditor = JetStreamAuditor(AuditSettings(spool=tmp_path / "not-a-dir" / "n1.spool", ack_timeout=0.2,
                                             create_stream=False, required=True))
    nc = FakeConnection()
    await auditor.start(View(nc))  # type: ignore[arg-type]
    waiting = asyncio.create_task(auditor.record(record(1, "decision")))
    await nc.sent.wait()
    await nc.answer(0, status="503")
    with pytest.raises(AuditUnavailable):
        await waiting
    await auditor.stop()


async def test_a_record_added_while_another_publish_waits_still_expires(tmp_path: Path) -> None:
    # The first record's publish waits (a flush); a second one goes out meanwhile. Neither is ever
    # acknowledged: both must still expire into the spool, so the expiry loop must have been woken.
    auditor, nc = await started(tmp_path)
    one, two = record(1), record(2)
    release = nc.hold = asyncio.Event()
    first = asyncio.create_task(auditor.record(one))
    await nc.sent.wait()
    nc.hold = None
    await auditor.record(two)  # goes out at once, while the first publish still waits
    assert auditor.in_flight == 2
    release.set()
    await first
    async with asyncio.timeout(10):
        await auditor.settle()
    assert sorted(spooled(auditor)) == sorted([one.msg_id, two.msg_id])
    await auditor.stop()


async def test_stop_spools_the_records_whose_acknowledgement_never_came(tmp_path: Path) -> None:
    auditor, nc = await started(tmp_path)
    one = record(1)
    await auditor.record(one)
    await auditor.stop()  # no acknowledgement comes: spooled before stop() returns
    assert spooled(auditor) == [one.msg_id] and auditor.in_flight == 0
