"""The files of auditing: the node's spool, the service's rotated file, the ids it reads back, syslog targets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from nmc.audit.dedup import RecentIds, read_lines_backwards
from nmc.audit.errors import SinkError, SpoolError, SpoolFull
from nmc.audit.formats import line_msg_id
from nmc.audit.records import encode_record
from nmc.audit.sinks import FileSink, SyslogTarget
from nmc.audit.spool import Spool, SpoolEntry
from nmc.protocol.audit import AuditRecord


def entry(i: int, phase: str = "decision") -> SpoolEntry:
    record = AuditRecord(phase=phase, request_id=f"r{i}", request_time=1.0, caller="cert=a", sender="s",
                         identity="n1", collective="c", agent="x", action="y", data={"i": i}, time=1764072000.0 + i,
                         nonce=f"{i:032x}")
    return SpoolEntry(subject="nmc.audit.c.n1", msg_id=record.msg_id, payload=encode_record(record))


def mid(i: int, phase: str = "decision") -> str:
    """The id of entry(i): identity, request id, phase and the record's nonce."""
    return f"n1:r{i}:{phase}:{i:032x}"


async def test_spool_keeps_order_across_a_restart_and_drops_only_the_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "state" / "n1.spool"
    spool = Spool(path)
    await asyncio.gather(*(spool.append(entry(i)) for i in range(50)))  # concurrent: one group commit or a few
    assert len(spool) == 50 and [e.msg_id for e in spool.head(3)] == [mid(0), mid(1), mid(2)]
    await spool.drop(20)
    await spool.append(entry(50))

    again = Spool(path)  # the node restarted
    assert await again.load() == 31
    assert [e.msg_id for e in again.head(100)] == [mid(i) for i in range(20, 51)]
    assert again.head(1)[0].payload == entry(20).payload
    await again.drop(31)
    assert path.read_bytes() == b"" and await Spool(path).load() == 0


async def test_a_spool_of_v1_records_is_upgraded_once_before_anything_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "n1.spool"
    old = {k: v for k, v in json.loads(entry(1).payload).items() if k != "nonce"} | {"protocol": "nmc.audit.v1"}
    path.write_text(json.dumps({"subject": "nmc.audit.c.n1", "msg_id": "r1:n1:decision", "record": old}) + "\n"
                    + entry(2).to_line().decode())
    spool = Spool(path)
    assert await spool.load() == 2
    upgraded, kept = spool.head(2)
    record = json.loads(upgraded.payload)
    assert record["protocol"] == "nmc.audit.v2" and upgraded.msg_id == f"n1:r1:decision:{record['nonce']}"
    assert kept == entry(2)
    # Already on disk: a restart (and so every resend) finds the same id.
    again = Spool(path)
    assert await again.load() == 2 and again.head(2) == [upgraded, kept]


async def test_spool_cuts_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "n1.spool"
    spool = Spool(path)
    await spool.append(entry(1))
    with path.open("ab") as fh:
        fh.write(b'{"subject": "nmc.audit.c.n1", "msg_')  # a crash in the middle of an append
    again = Spool(path)
    assert await again.load() == 1
    await again.append(entry(2))
    third = Spool(path)
    await third.load()
    assert [e.msg_id for e in third.head(5)] == [mid(1), mid(2)]


async def test_spool_full_and_unwritable(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "n1.spool", max_bytes=len(entry(1).to_line()) + 10)
    await spool.append(entry(1))
    with pytest.raises(SpoolFull) as full:
        await spool.append(entry(2))
    assert full.value.limit == spool.max_bytes and "audit.spool_max_bytes" in str(full.value)
    (tmp_path / "file").write_text("not a directory")
    blocked = Spool(tmp_path / "file" / "n1.spool")
    with pytest.raises(SpoolError) as failed:
        await blocked.append(entry(1))
    assert failed.value.path == tmp_path / "file" / "n1.spool"
    assert len(blocked) == 0


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rec(i: int) -> dict:
    return json.loads(entry(i).payload)


async def test_file_sink_rotates_by_size_and_keeps_n_files(tmp_path: Path) -> None:
    path = tmp_path / "log" / "audit.jsonl"
    one_line = len(json.dumps(rec(0), separators=(",", ":"))) + 1
    sink = FileSink(path, rotate_bytes=one_line * 3, keep=2)
    await sink.open(100)
    await sink.write([rec(i) for i in range(4)])
    await sink.write([rec(i) for i in range(4, 8)])
    await sink.write([rec(8)])
    # 9 records, 3 per file: audit.jsonl.1 and .2 are kept, the oldest file was deleted.
    assert [r["request_id"] for r in lines_of(path)] == ["r6", "r7", "r8"]
    assert [r["request_id"] for r in lines_of(path.with_name("audit.jsonl.1"))] == ["r3", "r4", "r5"]
    assert [r["request_id"] for r in lines_of(path.with_name("audit.jsonl.2"))] == ["r0", "r1", "r2"]
    assert not path.with_name("audit.jsonl.3").exists()
    # What a restarted service remembers: the newest ids across the rotated files, newest kept.
    recent = await FileSink(path, rotate_bytes=one_line * 3, keep=2).open(4)
    assert [mid(i) in recent for i in range(9)] == [False] * 5 + [True] * 4


async def test_file_sink_cuts_a_torn_line_and_formats_mcollective(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = FileSink(path, format="mcollective")
    await sink.open(10)
    await sink.write([rec(1)])
    with path.open("a") as fh:
        fh.write("[2025-11-25T12:00:00.000000Z] reqid=r2: reqt")
    again = FileSink(path, format="mcollective")
    recent = await again.open(10)
    assert mid(1) in recent and len(recent) == 1
    await again.write([rec(2)])
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(" reqid=" in ln for ln in lines)
    assert [line_msg_id(ln) for ln in lines] == [mid(1), mid(2)]


async def test_file_sink_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SinkError) as info:
        await FileSink(tmp_path / "file" / "audit.jsonl").open(10)
    assert info.value.sink.endswith("audit.jsonl")
    with pytest.raises(ValueError):
        FileSink(tmp_path / "a", format="xml")


def test_recent_ids_forget_the_oldest() -> None:
    recent = RecentIds(3)
    for i in range(5):
        recent.add(f"m{i}")
    assert [f"m{i}" in recent for i in range(5)] == [False, False, True, True, True]
    recent.add("m2")  # seen again: now the newest
    recent.add("m5")
    assert "m2" in recent and "m3" not in recent


def test_read_lines_backwards_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "f"
    lines = [f"line {i} " + "x" * (i * 37 % 3000) for i in range(2000)]
    path.write_text("\n".join(lines) + "\n")
    assert list(read_lines_backwards(path)) == lines[::-1]
    assert list(read_lines_backwards(tmp_path / "missing")) == []


@pytest.mark.parametrize(("url", "want"), [
    ("udp://127.0.0.1:5514", SyslogTarget("udp", host="127.0.0.1", port=5514)),
    ("tcp://logs.example.com", SyslogTarget("tcp", host="logs.example.com", port=514)),
    ("unix:///dev/log", SyslogTarget("unix", path="/dev/log")),
])
def test_syslog_targets(url: str, want: SyslogTarget) -> None:
    assert SyslogTarget.parse(url) == want
    assert str(want).split("://")[0] in url


@pytest.mark.parametrize("url", ["http://x", "udp://", "unix://", "tcp://h:99999", "127.0.0.1:514"])
def test_bad_syslog_targets(url: str) -> None:
    with pytest.raises(ValueError):
        SyslogTarget.parse(url)
