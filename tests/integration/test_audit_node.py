"""The node's side of auditing on a real nats-server with JetStream: stream, spool, resend, required, redaction."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from nats.js.api import DiscardPolicy, StorageType

from nmc.audit.publisher import AuditSettings, JetStreamAuditor
from nmc.audit.reader import AuditQuery, read_records
from nmc.audit.records import encode_record
from nmc.audit.spool import SpoolEntry
from nmc.audit.stream import STREAM, ensure_stream
from nmc.authz.hooks import Decision
from nmc.client.fleet import ClientSettings, FleetClient
from nmc.protocol.audit import AuditRecord
from nmc.protocol.ddl import Input
from nmc.protocol.filter import combine
from nmc.protocol.status import Status
from nmc.services.agent import ActionRequest, Agent, action
from tests.integration.auditkit import connect, publish_signed, trusting, until


class Vault(Agent):
    name = "vault"
    description = "test agent with a secret input"
    ran: list[str] = []

    @action("log in", inputs=(Input("user", optional=False), Input("password", optional=False, sensitive=True)))
    async def login(self, req: ActionRequest) -> dict[str, Any]:
        Vault.ran.append(req.request_id)
        return {"ok": req.data["password"] == "hunter2"}


class Gate(Agent):
    name = "gate"
    description = "an action that waits until the test opens the gate"
    opened = asyncio.Event()
    entered = asyncio.Event()

    @action("wait for the gate")
    async def wait(self, req: ActionRequest) -> dict[str, Any]:
        Gate.entered.set()
        await Gate.opened.wait()
        return {}


class DenyAll:
    async def authorize(self, *, caller: str, agent: str, action: str, identity: str, facts: Mapping[str, Any],
                        classes: Collection[str], facts_version: int, request_id: str) -> Decision:
        return Decision(False, "test.policy:1", "nobody may")


def auditor(tmp_path: Path, name: str, **kw: Any) -> JetStreamAuditor:
    return JetStreamAuditor(AuditSettings(spool=tmp_path / "spool" / f"{name}.spool", ack_timeout=0.5, **kw))


async def stream_records(nc, ca, **query: Any) -> list[dict[str, Any]]:
    return [r async for r in read_records(nc.jetstream(), AuditQuery(**query), verifier=trusting(ca))]


async def test_decision_and_result_reach_the_stream_with_dedup_ids_and_secrets_redacted(fleet, nats_url, tmp_path):
    Vault.ran.clear()
    auditors = [auditor(tmp_path, f"n{i}") for i in (1, 2)]
    for i, node_auditor in enumerate(auditors, 1):
        await fleet.add(f"n{i}.test", agents=[Vault], auditor=node_auditor)
    nc = await connect(nats_url)
    try:
        async with fleet.client() as fc:
            result = await fc.call("vault", "login", {"user": "alice", "password": "hunter2"},
                                   expect=["n1.test", "n2.test"])
        for node_auditor in auditors:  # the result records were published before the replies; now acknowledged
            await node_auditor.settle()
        assert all(a.published == 2 and len(a.spool) == 0 for a in auditors)
        assert sorted(r.identity for r in result.results) == ["n1.test", "n2.test"]
        assert all(r.data == {"ok": True} for r in result.results)  # the action saw the real password
        records = await stream_records(nc, fleet.ca)
        assert sorted((r["identity"], r["phase"]) for r in records) == [
            ("n1.test", "decision"), ("n1.test", "result"), ("n2.test", "decision"), ("n2.test", "result")]
        for r in records:
            assert r["data"] == {"user": "alice", "password": "***"}
            assert (r["caller"], r["agent"], r["action"], r["request_id"]) == ("cert=alice", "vault", "login", result.request_id)
            assert r["allowed"] is True
        results = [r for r in records if r["phase"] == "result"]
        assert all(r["status"] == 0 and r["duration_ms"] >= 0 for r in results)
        # The stream message carries the de-duplication id and the node's signature, on the node's own subject.
        msg = await nc.jetstream().get_last_msg(STREAM, "nmc.audit.nmc.n1%2Etest")
        nonce = json.loads(msg.data)["nonce"]
        assert msg.headers["Nats-Msg-Id"] == f"n1%2Etest:{result.request_id}:result:{nonce}"
        assert fleet.ca.verifier().verify(msg.data, msg.headers["Nmc-Signature"], msg.headers["Nmc-Certificate"]) == \
            "n1.test"
        assert [r["identity"] for r in await stream_records(nc, fleet.ca, identity="n2.test")] == ["n2.test", "n2.test"]
    finally:
        await nc.close()


async def test_a_denied_request_leaves_a_decision_record_and_runs_nothing(fleet, nats_url, tmp_path):
    Vault.ran.clear()
    node_auditor = auditor(tmp_path, "n1")
    await fleet.add("n1.test", agents=[Vault], auditor=node_auditor, authorizer=DenyAll())
    nc = await connect(nats_url)
    try:
        async with fleet.client() as fc:
            result = await fc.call("vault", "login", {"user": "bob", "password": "x"}, expect=["n1.test"])
        await node_auditor.settle()
        assert result.results[0].status == Status.ABORTED and Vault.ran == []
        records = await stream_records(nc, fleet.ca)
        assert [(r["phase"], r["allowed"], r["rule"], r["caller"]) for r in records] == [
            ("decision", False, "test.policy:1", "cert=alice")]
    finally:
        await nc.close()


async def test_results_made_while_the_broker_is_down_are_spooled_and_resent_in_order(fleet, nats_server, tmp_path):
    Gate.opened.clear()
    Gate.entered.clear()
    node_auditor = auditor(tmp_path, "n1")
    node = await fleet.add("n1.test", agents=[Gate], auditor=node_auditor)
    try:
        await _outage(fleet, nats_server, node, node_auditor)
    finally:
        if not nats_server.running:
            await asyncio.to_thread(nats_server.start)
    await until(lambda: _true(len(node_auditor.spool) == 0), 20, "the spool to be resent")
    nc = await connect(nats_server.url)
    try:
        records = await stream_records(nc, fleet.ca)
        assert [(r["request_id"].startswith("later-"), r["phase"]) for r in records] == \
            [(False, "decision"), (False, "result")] + [(True, "decision")] * 5
        assert [r["request_id"] for r in records[2:]] == [f"later-{i}" for i in range(5)]
        assert node_auditor.settings.spool.read_bytes() == b""
    finally:
        await nc.close()


async def _outage(fleet, nats_server, node, node_auditor) -> None:
    nc = await connect(nats_server.url, as_name="alice")
    fc = FleetClient(nc=nc, signer=fleet.ca.signer("alice"), verifier=fleet.ca.verifier(),
                     settings=ClientSettings(collective="nmc"))
    try:
        call = asyncio.create_task(fc.call("gate", "wait", {}, expect=["n1.test"], timeout=30))
        await Gate.entered.wait()  # the decision record is in the stream, the action is running
        await asyncio.to_thread(nats_server.stop)
        await until(lambda: _true(not node.nc.is_connected), 10, "the node to notice the broker is gone")
        Gate.opened.set()  # the action ends while the broker is down: its result can only go to the spool
        await until(lambda: _true(len(node_auditor.spool) == 1), 10, "the result in the spool")
        later = [AuditRecord(phase="decision", request_id=f"later-{i}", request_time=0.0, caller="cert=test", sender="t",
                             identity="n1.test", collective="nmc", agent="gate", action="wait", time=1764072000.0 + i)
                 for i in range(5)]
        for record in later:
            await node_auditor.record(record)
        assert len(node_auditor.spool) == 6  # record() returned: each one is on disk
        spooled = [json.loads(line) for line in node_auditor.settings.spool.read_text().splitlines()]
        assert [e["record"]["phase"] for e in spooled] == ["result"] + ["decision"] * 5
        # Each with its id and nonce, so a resend (even after a restart) is recognised as the same record.
        assert [e["msg_id"] for e in spooled[1:]] == [r.msg_id for r in later]
        assert [e["record"]["nonce"] for e in spooled[1:]] == [r.nonce for r in later]
        await asyncio.to_thread(nats_server.start)
        call.cancel()  # its reply may have been lost with the broker; the records are what matters here
        with contextlib.suppress(asyncio.CancelledError):
            await call
    finally:
        await nc.close()


async def test_the_spool_survives_a_node_restart_and_resends_are_deduplicated(fleet, nats_url, tmp_path):
    nc = await connect(nats_url)
    js = nc.jetstream()
    try:
        # A stream that refuses every record (full, discard new): the node must spool.
        info = await ensure_stream(js)
        config = info.config
        config.max_msgs, config.discard = 1, DiscardPolicy.NEW
        await js.update_stream(config)
        stored = AuditRecord(phase="decision", request_id="stored-before", request_time=0.0, caller="cert=t",
                             sender="t", identity="n1.test", collective="nmc", agent="rpcutil", action="ping",
                             time=1764072000.0)
        # A publish that "timed out" although the stream stored it: its resend must not make a second copy.
        await publish_signed(js, stored, fleet.ca.signer("n1.test"))

        first = auditor(tmp_path, "n1")
        await first.spool.append(SpoolEntry("nmc.audit.nmc.n1%2Etest", stored.msg_id, encode_record(stored)))
        node = await fleet.add("n1.test", auditor=first)
        async with fleet.client() as fc:
            pinged = await fc.call("rpcutil", "ping", {}, expect=["n1.test"])
        assert pinged.results[0].ok
        # The stream acknowledged the stored record's resend as a duplicate (even though it is full), so
        # only this request's decision and result are left in the spool, once the stream's refusals of them
        # came back (acknowledgements are tracked after the reply: settle() waits for them).
        await first.settle()
        assert len(first.spool) == 2 and (await js.stream_info(STREAM)).state.messages == 1
        await node.stop()

        second = auditor(tmp_path, "n1")  # the node restarts with the same spool file
        await fleet.add("n1.test", auditor=second)
        assert await second.spool.load() == 2
        config.max_msgs, config.discard = -1, DiscardPolicy.OLD  # the stream takes records again
        await js.update_stream(config)
        await until(lambda: _true(len(second.spool) == 0), 20, "the spool to be resent after the restart")
        records = await stream_records(nc, fleet.ca)
        assert [(r["request_id"], r["phase"]) for r in records] == [
            ("stored-before", "decision"), (pinged.request_id, "decision"), (pinged.request_id, "result")]
        assert (await js.stream_info(STREAM)).state.messages == 3  # the resent copy was dropped by the stream
    finally:
        await nc.close()


async def test_audit_required_refuses_actions_only_when_no_record_can_be_kept(fleet, nats_url, tmp_path):
    Vault.ran.clear()
    nc = await connect(nats_url)
    js = nc.jetstream()
    try:
        config = (await ensure_stream(js)).config
        config.max_msgs, config.discard = 0, DiscardPolicy.NEW  # nothing gets in
        config.max_msgs = 1
        await js.update_stream(config)
        await js.publish("nmc.audit.x.filler", b"{}")  # the one slot is taken
        (tmp_path / "not-a-dir").write_text("")
        broken = JetStreamAuditor(AuditSettings(spool=tmp_path / "not-a-dir" / "n1.spool", required=True,
                                                ack_timeout=0.5))
        strict_ok = auditor(tmp_path, "n2", required=True)
        lenient = JetStreamAuditor(AuditSettings(spool=tmp_path / "not-a-dir" / "n3.spool", ack_timeout=0.5))
        await fleet.add("n1.test", agents=[Vault], auditor=broken)
        await fleet.add("n2.test", agents=[Vault], auditor=strict_ok)
        await fleet.add("n3.test", agents=[Vault], auditor=lenient)
        async with fleet.client() as fc:
            result = await fc.call("vault", "login", {"user": "u", "password": "p"},
                                   expect=["n1.test", "n2.test", "n3.test"])
        by_node = {r.identity: r for r in result.results}
        assert by_node["n1.test"].status == Status.ABORTED
        assert "audit required but unavailable" in by_node["n1.test"].message
        assert by_node["n2.test"].ok and by_node["n3.test"].ok  # the spool took it / auditing is not required
        assert sorted(Vault.ran) == [result.request_id] * 2
        # The decision record with audit.required was in n2's spool before the action ran; the result
        # records' refusals come back after the replies: settle() waits for them.
        await strict_ok.settle()
        await lenient.settle()
        assert len(strict_ok.spool) == 2 and lenient.lost == 2
    finally:
        await nc.close()


async def test_nodes_create_a_missing_stream(fleet, nats_url, tmp_path):
    node_auditor = auditor(tmp_path, "n1", max_age=3600)
    await fleet.add("n1.test", auditor=node_auditor)
    nc = await connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(STREAM)
        assert info.config.subjects == ["nmc.audit.>"] and info.config.max_age == 3600
        assert info.config.duplicate_window >= 120 and info.config.storage == StorageType.FILE
        async with fleet.client() as fc:
            await fc.call("rpcutil", "ping", {}, filter_expr=combine(identities=["n1.test"]), expect=["n1.test"])
        await node_auditor.settle()
        assert [r["phase"] for r in await stream_records(nc, fleet.ca)] == ["decision", "result"]
    finally:
        await nc.close()


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The process `pid` stopped (SIGSTOP) inside the block: it keeps its connections but answers nothing."""
    os.kill(pid, signal.SIGSTOP)
    try:
        # SIGSTOP reaches each of nats-server's threads in turn: one still running could answer for a moment.
        while not all(_stopped(pid, task) for task in os.listdir(f"/proc/{pid}/task")):
            time.sleep(0.001)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _stopped(pid: int, task: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
    except FileNotFoundError:
        return True  # the thread ended
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def _records(prefix: str, count: int) -> list[AuditRecord]:
    return [AuditRecord(phase="decision", request_id=f"{prefix}-{i}", request_time=0.0, caller="cert=test", sender="t",
                        identity="n1.test", collective="nmc", agent="rpcutil", action="ping", time=1764072000.0 + i)
            for i in range(count)]


async def test_records_whose_acknowledgement_never_comes_are_spooled_by_stop_and_delivered_later(
        fleet, nats_server, tmp_path):
    # The broker is frozen (SIGSTOP) while records are in flight: the connection stays up, the records
    # leave the node, and no acknowledgement comes. record() returns at once (acknowledgements are
    # tracked, not waited for); stop() must not return before each record is acknowledged or spooled.
    first = auditor(tmp_path, "n1")
    node = await fleet.add("n1.test", auditor=first)
    records = _records("frozen", 5)
    with frozen(nats_server.pid):
        for record in records:
            await first.record(record)
        assert first.in_flight == 5 and len(first.spool) == 0 and first.published == 0
        await first.stop()  # the node shutting down: nothing acknowledged within ack_timeout, so all spooled
        assert first.in_flight == 0 and first.published == 0
        assert [e["msg_id"] for e in map(json.loads, first.settings.spool.read_text().splitlines())] == \
            [r.msg_id for r in records]
    # Thawed, the broker reads what it was sent meanwhile and may store those records (the acknowledgements
    # come too late). The node starts again with its spool and resends: each record ends up in the stream once.
    await node.stop()
    second = auditor(tmp_path, "n1")
    await fleet.add("n1.test", auditor=second)
    await until(lambda: _true(len(second.spool) == 0), 20, "the spool to be resent after the restart")
    nc = await connect(nats_server.url)
    try:
        stored = [r["request_id"] for r in await stream_records(nc, fleet.ca)]
        assert sorted(stored) == [r.request_id for r in records]
        assert (await nc.jetstream().stream_info(STREAM)).state.messages == 5
    finally:
        await nc.close()


async def test_records_the_stream_refuses_after_they_were_published_are_spooled_and_resent(fleet, nats_url, tmp_path):
    # The stream is removed under a running node: its records are published, then refused ("no
    # responders": no stream takes the subject), so they go to the spool; once the stream is back, the
    # resend loop delivers them.
    node_auditor = auditor(tmp_path, "n1")
    await fleet.add("n1.test", auditor=node_auditor)
    nc = await connect(nats_url)
    js = nc.jetstream()
    try:
        await js.delete_stream(STREAM)
        records = _records("refused", 5)
        for record in records:
            await node_auditor.record(record)
        await node_auditor.settle()
        assert node_auditor.in_flight == 0 and node_auditor.published == 0 and len(node_auditor.spool) == 5
        await ensure_stream(js)
        await until(lambda: _true(len(node_auditor.spool) == 0), 20, "the spool to be resent")
        assert sorted(r["request_id"] for r in await stream_records(nc, fleet.ca)) == [r.request_id for r in records]
        assert node_auditor.resent == 5
    finally:
        await nc.close()


async def test_audit_required_keeps_the_decision_record_before_the_action_runs(fleet, nats_server, tmp_path):
    # audit.required: record() returns for a decision record only once it is kept. With the broker frozen,
    # no acknowledgement comes, so it returns after ack_timeout with the record in the spool; a result
    # record is handed over at once.
    strict = auditor(tmp_path, "n1", required=True)
    await fleet.add("n1.test", auditor=strict)
    decision, = _records("strict", 1)
    result = AuditRecord(**{**decision.__dict__, "phase": "result", "status": 0, "nonce": "0" * 32})
    with frozen(nats_server.pid):
        await strict.record(result)
        assert strict.in_flight == 1 and len(strict.spool) == 0
        await strict.record(decision)
        assert len(strict.spool) >= 1  # kept: on disk (after the result record, which expired first)
        assert decision.msg_id in strict.settings.spool.read_text()
    await strict.settle()
    assert strict.in_flight == 0


async def _true(value: bool) -> bool:
    return value
