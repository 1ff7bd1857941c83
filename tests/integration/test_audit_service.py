"""The audit service on a real nats-server: file, duplicates, its position across restarts, formats, ADR-32, rsyslog.

The service reads NMC_AUDIT by sequence and keeps its position in a file
(nmc.audit.position); `caught_up` waits until that file says every stored
message was handled.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

import pytest


from nmc.audit.position import Position, PositionFile
from nmc.audit.publisher import AuditSettings, JetStreamAuditor
from nmc.audit.records import encode_record
from nmc.audit.service import AuditService, AuditServiceSettings
from nmc.audit.sinks import SyslogTarget
from nmc.audit.stream import STREAM, ensure_stream
from nmc.protocol.audit import AuditRecord
from tests.integration.auditkit import (
    Rsyslog,
    caught_up,
    connect,
    publish_signed,
    read_records,
    record_counts,
    trusting,
    until,
)
from tests.integration.test_adr32_schema import assert_valid


def rec(i: int, phase: str = "decision", identity: str = "n1.test", **kw: Any) -> AuditRecord:
    fields: dict[str, Any] = dict(phase=phase, request_id=f"req-{i}", request_time=1764072000.0 + i, caller="cert=alice",
                                  sender="admin", identity=identity, collective="nmc", agent="rpcutil", action="ping",
                                  time=1764072000.0 + i, nonce=f"{i:032x}")  # rec(i) is always the same record
    fields.update(kw)
    return AuditRecord(**fields)


def settings(tmp_path: Path, url: str, **kw: Any) -> AuditServiceSettings:
    return AuditServiceSettings(**{"file": tmp_path / "audit" / "audit.jsonl", "servers": (url,), **kw})


def done(nc: Any, service: AuditService) -> Callable[[], Awaitable[bool]]:
    """A check for `until`: the service's saved position is past the stream's last message."""
    return lambda: caught_up(nc, service.settings.position_path)


async def test_each_record_is_written_once_across_restarts_and_crashes(nats_url, tmp_path, test_ca):
    nc = await connect(nats_url)
    js = nc.jetstream()
    node = test_ca.signer("n1.test")

    async def publish(record: AuditRecord, msg_id: str | None = None) -> None:
        await publish_signed(js, record, node, msg_id)

    service = AuditService(settings(tmp_path, nats_url), trusting(test_ca))
    try:
        await ensure_stream(js)
        for i in range(10):
            await publish(rec(i))
        # A node's resend that came after the stream's de-duplication window: a second copy in the stream.
        await publish(rec(3), msg_id="resent-after-the-window")
        await service.start()
        await until(done(nc, service), 20, "the service to write 11 messages and save its position")
        await service.stop()
        assert [r["request_id"] for r in read_records(service.settings.file)] == [f"req-{i}" for i in range(10)]
        assert service.counters.duplicates == 1
        # The position file: the next sequence, and the stream it counts in.
        info = await js.stream_info(STREAM)
        saved = PositionFile(service.settings.position_path).load()
        assert saved == Position(next_seq=12, stream_created=info.created.isoformat())
        assert json.loads(service.settings.position_path.read_text())["next_seq"] == 12

        # While it is stopped more records arrive; it resumes at its saved position.
        for i in range(10, 15):
            await publish(rec(i))
        # A crash after writing two of them but before saving the position: the file has them, they are read again.
        with service.settings.file.open("a") as fh:
            for i in (10, 11):
                fh.write(json.dumps(rec(i).to_dict(), separators=(",", ":")) + "\n")
            fh.write('{"protocol":"nmc.audit.v1","phase":"deci')  # and a torn last line
        again = AuditService(settings(tmp_path, nats_url), trusting(test_ca))
        await again.start()
        await until(done(nc, again), 20, "the restarted service to catch up")
        await again.stop()
        counts = record_counts(service.settings.file)
        assert sorted(counts) == sorted((f"req-{i}", "n1.test", "decision") for i in range(15))
        assert set(counts.values()) == {1}
        # Only the five new messages were read: the eleven before the saved position were not read again.
        assert again.counters.written == 3 and again.counters.duplicates == 2
        assert again.position == 17 and PositionFile(service.settings.position_path).load().next_seq == 17
    finally:
        await service.stop()
        await nc.close()


async def test_mcollective_format_and_bad_messages(nats_url, tmp_path, test_ca):
    nc = await connect(nats_url)
    js = nc.jetstream()
    node = test_ca.signer("n1.test")
    service = AuditService(settings(tmp_path, nats_url, file=tmp_path / "audit.log", format="mcollective"),
                           trusting(test_ca))
    try:
        await ensure_stream(js)
        await js.publish("nmc.audit.nmc.junk", b"not a record")  # someone else's mistake: logged, never written
        await js.publish("nmc.audit.nmc.n1%2Etest", encode_record(rec(2)))  # a record, but unsigned: refused
        await publish_signed(js, rec(1, data={"fact": "country"}), node)
        await publish_signed(js, rec(1, "result", status=0, duration_ms=2.5), node)
        await service.start()
        await until(done(nc, service), 20, "the service to catch up")
        lines = (tmp_path / "audit.log").read_text().splitlines()
        assert len(lines) == 2 and service.counters.bad == 1 and service.counters.refused == 1
        assert re.fullmatch(r"\[2025-11-25T12:00:01\.000000Z\] reqid=req-1: reqtime=1764072001 caller=cert=alice@admin "
                            r'agent=rpcutil action=ping data=\{:fact=>"country"\} allowed=true rule=- status=- '
                            r"duration_ms=- identity=n1\.test phase=decision nonce=0{31}1", lines[0]), lines[0]
        assert lines[1].endswith("status=0 duration_ms=2.5 identity=n1.test phase=result nonce=" + f"{1:032x}")
    finally:
        await service.stop()
        await nc.close()


async def test_the_service_is_an_adr32_service(nats_url, tmp_path, test_ca):
    nc = await connect(nats_url)
    service = AuditService(settings(tmp_path, nats_url), trusting(test_ca))
    try:
        await service.start()
        for verb in ("PING", "INFO", "STATS"):
            reply = json.loads((await nc.request(f"$SRV.{verb}.nmc-audit", b"", timeout=2)).data)
            assert_valid(verb, reply)
            assert reply["name"] == "nmc-audit"
        info = json.loads((await nc.request("$SRV.INFO.nmc-audit", b"", timeout=2)).data)
        assert info["metadata"]["stream"] == "NMC_AUDIT" and "consumer" not in info["metadata"]
        assert info["metadata"]["file"] == str(service.settings.file)
        assert info["metadata"]["position_file"] == str(service.settings.file) + ".position"
    finally:
        await service.stop()
        await nc.close()


@pytest.fixture
def rsyslog(tmp_path: Path):
    daemon = Rsyslog(tmp_path / "rsyslog")
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.mark.parametrize("transport", ["tcp", "udp", "unix"])
async def test_records_reach_a_real_rsyslog(fleet, nats_url, tmp_path, rsyslog, transport):
    target = {"tcp": SyslogTarget("tcp", host="127.0.0.1", port=rsyslog.tcp_port),
              "udp": SyslogTarget("udp", host="127.0.0.1", port=rsyslog.udp_port),
              "unix": SyslogTarget("unix", path=str(rsyslog.unix_socket))}[transport]
    service = AuditService(settings(tmp_path, nats_url, syslog=target), trusting(fleet.ca))
    nc = await connect(nats_url)
    try:
        await service.start()
        for i in (1, 2):
            await fleet.add(f"web{i}.test", auditor=JetStreamAuditor(AuditSettings(spool=tmp_path / f"web{i}.spool")))
        async with fleet.client() as fc:
            result = await fc.call("rpcutil", "get_fact", {"fact": "nope"}, expect=["web1.test", "web2.test"])

        async def received() -> bool:
            return len(rsyslog.lines()) >= 4

        await until(received, 20, "rsyslog to write four records")
        lines = rsyslog.lines()
        parsed = []
        for line in lines:
            host, app, msgid, msg = line.split(" ", 3)
            record = json.loads(msg)
            assert (host, app, msgid) == (record["identity"], "nmc-audit", record["phase"])
            parsed.append(record)
        assert sorted((r["identity"], r["phase"]) for r in parsed) == [
            ("web1.test", "decision"), ("web1.test", "result"), ("web2.test", "decision"), ("web2.test", "result")]
        assert {r["request_id"] for r in parsed} == {result.request_id}
        assert {r["status"] for r in parsed if r["phase"] == "result"} == {1}  # get_fact of a missing fact aborts
        assert {(r["caller"], r["agent"], r["action"], r["data"]["fact"]) for r in parsed} == {
            ("cert=alice", "rpcutil", "get_fact", "nope")}
        # The same records are in the file, exactly once.
        await until(done(nc, service), 20, "the service to save its position after them")
        assert sorted(record_counts(service.settings.file).values()) == [1, 1, 1, 1]
    finally:
        await service.stop()
        await nc.close()


async def test_the_position_stays_while_syslog_cannot_take_the_records(fleet, nats_url, tmp_path):
    rsyslog = Rsyslog(tmp_path / "rsyslog")  # configured, not started yet: its TCP port refuses connections
    service = AuditService(settings(tmp_path, nats_url, syslog=SyslogTarget("tcp", host="127.0.0.1",
                                                                            port=rsyslog.tcp_port)), trusting(fleet.ca))
    nc = await connect(nats_url)
    js = nc.jetstream()
    try:
        await ensure_stream(js)
        for i in range(3):
            await publish_signed(js, rec(i), fleet.ca.signer("n1.test"))
        await service.start()

        async def failing() -> bool:
            return service.counters.sink_errors >= 2

        await until(failing, 20, "the service to report the syslog failure")
        assert service.position == 1 and not service.settings.position_path.exists()
        assert not service.settings.file.exists()
        rsyslog.start()
        try:
            await until(done(nc, service), 30, "the records to be written once syslog is back")

            async def received() -> bool:
                return len(rsyslog.lines()) == 3

            await until(received, 20, "rsyslog to write the three records")
        finally:
            rsyslog.stop()
        assert [r["request_id"] for r in read_records(service.settings.file)] == ["req-0", "req-1", "req-2"]
    finally:
        await service.stop()
        await nc.close()
