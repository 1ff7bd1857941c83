"""The audit service's own position in NMC_AUDIT (no consumer): the file, hints, and what happens around them.

Real nats-server, the service in the test's loop. The service reads the stream
by sequence and saves the next sequence to `<audit.file>.position` once the
records before it are written (nmc.audit.position); it hears `nmc.audit.>`
only as a hint to read on.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from nmc.audit.errors import PositionError
from nmc.audit.position import PositionFile
from nmc.audit.service import AuditService, AuditServiceSettings
from nmc.audit.stream import STREAM, ensure_stream
from nmc.protocol.audit import AuditRecord
from tests.integration.auditkit import (
    NMC,
    caught_up,
    connect,
    publish_signed,
    read_records,
    record_counts,
    trusting,
    until,
    write_audit_cfg,
)


def rec(i: int, phase: str = "decision", **kw: Any) -> AuditRecord:
    fields: dict[str, Any] = dict(phase=phase, request_id=f"req-{i}", request_time=1764072000.0 + i, caller="cert=alice",
                                  sender="admin", identity="n1.test", collective="nmc", agent="rpcutil", action="ping",
                                  time=1764072000.0 + i, nonce=f"{i:032x}")
    fields.update(kw)
    return AuditRecord(**fields)


def settings(tmp_path: Path, url: str, **kw: Any) -> AuditServiceSettings:
    return AuditServiceSettings(**{"file": tmp_path / "audit" / "audit.jsonl", "servers": (url,), **kw})


def written_ids(service: AuditService) -> list[str]:
    return [r["request_id"] for r in read_records(service.settings.file)]


async def run_until_caught_up(service: AuditService, nc: Any, what: str) -> None:
    await service.start()
    await until(lambda: caught_up(nc, service.settings.position_path), 20, what)
    await service.stop()


async def test_a_corrupt_position_file_is_reported_and_the_stream_read_again_from_its_first_record(
        nats_url, tmp_path, test_ca):
    nc = await connect(nats_url)
    js = nc.jetstream()
    node = test_ca.signer("n1.test")
    try:
        await ensure_stream(js)
        for i in range(4):
            await publish_signed(js, rec(i), node)
        first = AuditService(settings(tmp_path, nats_url), trusting(test_ca))
        await run_until_caught_up(first, nc, "the first run to save its position")
        position_file = first.settings.position_path
        position_file.write_bytes(b'{"stream":"NMC_AUDIT","next_s')  # as no save by the service can leave it
        for i in (4, 5):
            await publish_signed(js, rec(i), node)
        again = AuditService(settings(tmp_path, nats_url), trusting(test_ca))
        with capture_logs() as logs:
            await run_until_caught_up(again, nc, "the service to read the stream again")
        corrupt = [e for e in logs if e["event"] == "audit_position_corrupt"]
        assert len(corrupt) == 1 and corrupt[0]["log_level"] == "warning", logs
        assert str(position_file) in corrupt[0]["position_file"] and "\n" not in corrupt[0]["error"]
        assert "not an audit position" in corrupt[0]["error"]
        # Defined behaviour: from the stream's first record; what the file has is dropped as a duplicate.
        assert (again.counters.written, again.counters.duplicates) == (2, 4)
        assert written_ids(again) == [f"req-{i}" for i in range(6)]
        assert PositionFile(position_file).load().next_seq == 7  # replaced by a good one
    finally:
        await nc.close()


async def test_a_position_file_that_cannot_be_read_stops_the_start_with_one_line(nats_url, tmp_path, test_ca):
    unreadable = tmp_path / "audit" / "audit.jsonl.position"
    unreadable.mkdir(parents=True)  # a directory where the file should be: reading it fails (also as root)
    service = AuditService(settings(tmp_path, nats_url), trusting(test_ca))
    with pytest.raises(PositionError) as info:
        await service.start()
    assert str(info.value).startswith(f"{unreadable}: cannot read the audit position: ")
    assert "\n" not in str(info.value) and service.nc is None  # refused before connecting
    # `nmc serve audit` says the same in one line and exits 1 (no broker needed to find out).
    config = write_audit_cfg(tmp_path / "audit.cfg", "nats://127.0.0.1:1", test_ca.directory / "ca.pem",
                             file=tmp_path / "audit" / "audit.jsonl")
    proc = subprocess.run([*NMC, "serve", "audit", "--config", str(config), "--log-format", "json"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"Error: {unreadable}: cannot read the audit position: Is a directory"


async def test_a_position_that_cannot_be_saved_is_reported_and_the_records_written_all_the_same(
        nats_url, tmp_path, test_ca):
    nc = await connect(nats_url)
    js = nc.jetstream()
    node = test_ca.signer("n1.test")
    service = AuditService(settings(tmp_path, nats_url), trusting(test_ca))
    try:
        await ensure_stream(js)
        await service.start()
        await until(lambda: _true(service.position == 1), 20, "the service to find the empty stream")
        service.settings.position_path.unlink(missing_ok=True)  # saved for the empty stream, maybe
        service.settings.position_path.mkdir()  # nothing can be renamed over a directory
        with capture_logs() as logs:
            for i in (1, 2):
                await publish_signed(js, rec(i), node)
            await until(lambda: _true(service.counters.written == 2), 20, "both records to be written")
            await until(lambda: _true(any(e["event"] == "audit_position_not_saved" for e in logs)), 20,
                        "the failed save to be reported")
        failed = [e for e in logs if e["event"] == "audit_position_not_saved"]
        assert failed and failed[0]["log_level"] == "error" and "cannot save the audit position" in failed[0]["error"]
        assert service.counters.sink_errors == len(failed) and service.position == 3
        service.settings.position_path.rmdir()
        await publish_signed(js, rec(3), node)
        await until(lambda: caught_up(nc, service.settings.position_path), 20, "the next batch to save the position")
        assert written_ids(service) == ["req-1", "req-2", "req-3"]
    finally:
        await service.stop()
        await nc.close()


async def test_records_aged_out_while_the_service_was_down_are_counted_and_reported(nats_url, tmp_path, test_ca):
    nc = await connect(nats_url)
    js = nc.jetstream()
    node = test_ca.signer("n1.test")
    try:
        await ensure_stream(js, max_age=2.0)  # records live two seconds
        for i in range(3):
            await publish_signed(js, rec(i), node)
        service = AuditService(settings(tmp_path, nats_url, max_age=2.0), trusting(test_ca))
        await run_until_caught_up(service, nc, "the first run to save its position")
        assert PositionFile(service.settings.position_path).load().next_seq == 4
        # Down while three more come and go.
        for i in range(3, 6):
            await publish_signed(js, rec(i), node)

        async def aged_out() -> bool:
            return (await js.stream_info(STREAM)).state.messages == 0

        await until(aged_out, 30, "records 3 to 5 to age out of the stream")
        for i in (6, 7):
            await publish_signed(js, rec(i), node)
        again = AuditService(settings(tmp_path, nats_url, max_age=2.0), trusting(test_ca))
        with capture_logs() as logs:
            await run_until_caught_up(again, nc, "the restarted service to catch up")
        lost = [e for e in logs if e["event"] == "audit_records_lost"]
        assert lost and all(e["log_level"] == "warning" for e in lost), logs
        assert lost[0]["first_stream_seq"] == 4 and sum(e["count"] for e in lost) == again.counters.lost
        # Records 3..5 are gone; 6 and 7 are written unless they aged out too before the service came to them.
        written_again = written_ids(again)[3:]
        assert again.counters.lost >= 3 and again.counters.lost + len(written_again) == 5
        assert written_again == ["req-6", "req-7"][2 - len(written_again):]
        assert PositionFile(again.settings.position_path).load().next_seq == 9
    finally:
        await nc.close()


async def test_a_stream_made_again_is_read_from_its_first_record(nats_url, tmp_path, test_ca):
    nc = await connect(nats_url)
    js = nc.jetstream()
    node = test_ca.signer("n1.test")
    try:
        await ensure_stream(js)
        for i in range(3):
            await publish_signed(js, rec(i), node)
        service = AuditService(settings(tmp_path, nats_url), trusting(test_ca))
        await run_until_caught_up(service, nc, "the first run to save its position")
        # The stream is lost and made again (a broker's store lost, say): it numbers from 1 again, and
        # has as many records as before, so only its creation time tells it from the old one.
        await js.delete_stream(STREAM)
        await ensure_stream(js)
        for i in range(10, 13):
            await publish_signed(js, rec(i), node)
        assert PositionFile(service.settings.position_path).load().next_seq == 4
        again = AuditService(settings(tmp_path, nats_url), trusting(test_ca))
        with capture_logs() as logs:
            await run_until_caught_up(again, nc, "the service to read the new stream")
        assert [e["log_level"] for e in logs if e["event"] == "audit_stream_replaced"] == ["warning"]
        assert written_ids(again) == ["req-0", "req-1", "req-2", "req-10", "req-11", "req-12"]
        assert again.counters.written == 3 and again.counters.lost == 0
    finally:
        await nc.close()


async def test_only_what_the_stream_holds_is_written_never_what_the_hint_subscription_hears(
        nats_url, tmp_path, test_ca):
    nc = await connect(nats_url)
    js = nc.jetstream()
    node = test_ca.signer("n1.test")
    service = AuditService(settings(tmp_path, nats_url), trusting(test_ca))
    try:
        await ensure_stream(js)
        await publish_signed(js, rec(1), node, msg_id="same-id")
        await service.start()
        # A genuine, signed record the stream does not store (its Nats-Msg-Id was seen within the window):
        # every subscriber of nmc.audit.> hears it all the same.
        ack = await publish_signed(js, rec(2), node, msg_id="same-id")
        assert ack.duplicate
        await publish_signed(js, rec(3), node)

        async def heard_and_written() -> bool:
            return service.counters.hints >= 2 and await caught_up(nc, service.settings.position_path)

        await until(heard_and_written, 20, "the service to hear both records and write what the stream holds")
        assert written_ids(service) == ["req-1", "req-3"]
        assert (await js.stream_info(STREAM)).state.messages == 2
    finally:
        await service.stop()
        await nc.close()


async def test_a_hint_wakes_the_service_at_once(nats_url, tmp_path, test_ca):
    nc = await connect(nats_url)
    js = nc.jetstream()
    node = test_ca.signer("n1.test")
    # It would look for new records only once a minute on its own: what is written sooner came by a hint.
    service = AuditService(settings(tmp_path, nats_url, idle=60.0), trusting(test_ca))
    try:
        await ensure_stream(js)
        await service.start()
        await until(lambda: _true(service.position == 1), 20, "the service to find the empty stream")
        for i in range(3):
            await publish_signed(js, rec(i), node)
            await until(lambda: caught_up(nc, service.settings.position_path), 10,
                        f"record {i} to be written long before the service would look on its own")
        assert written_ids(service) == ["req-0", "req-1", "req-2"]
        assert set(record_counts(service.settings.file).values()) == {1}
        assert json.loads(service.settings.position_path.read_text())["next_seq"] == 4
    finally:
        await service.stop()
        await nc.close()


async def _true(value: bool) -> bool:
    return value
