"""The node's local spool: audit records JetStream could not acknowledge, kept on disk in order.

One JSON object per line (`{"subject", "msg_id", "record"}`), appended and
fsync'd before `append()` returns, so a record the node was told is kept
survives a crash or a restart of the node. `drop(n)` removes the first n
entries (the ones the stream acknowledged) by writing the rest to a new
file and renaming it over the old one: the file is always either the old or
the new list, never half of each.

A spool left by a node older than `nmc.audit.v2` holds unsigned v1 records
with guessable ids: `load()` turns them into v2 records (a fresh nonce each,
so a fresh id) and rewrites the file before anything is sent, so every resend
of them carries the same id again.

All file work runs in a worker thread (`asyncio.to_thread`), one operation
at a time. Appends that arrive while a write is in progress are written
together with one fsync (group commit), which keeps a broker outage with
many concurrent requests from turning into one fsync per record.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from nmc.audit.errors import AuditRecordError, SpoolError, SpoolFull
from nmc.audit.records import decode_record
from nmc.protocol.audit import AUDIT_PROTOCOL_V1, record_msg_id, upgrade_record

__all__ = ["Spool", "SpoolEntry"]

log = structlog.get_logger("nmc.audit")


@dataclass(frozen=True)
class SpoolEntry:
    """One record waiting for the stream: where it goes, its de-duplication id and its body."""

    subject: str
    msg_id: str
    payload: bytes

    def to_line(self) -> bytes:
        """The entry as one spool line (the record stays readable JSON)."""
        record = json.loads(self.payload)
        return json.dumps({"subject": self.subject, "msg_id": self.msg_id, "record": record},
                          separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> SpoolEntry:
        """Parse one spool line; ValueError when it is not one."""
        obj = json.loads(line)
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("subject", "msg_id")):
            raise ValueError("not a spool entry")
        payload = json.dumps(obj["record"], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return cls(subject=obj["subject"], msg_id=obj["msg_id"], payload=payload)

    def upgraded(self) -> SpoolEntry | None:
        """This entry as a v2 record with its own new id, when it holds a v1 record; else None."""
        if b'"protocol":"' + AUDIT_PROTOCOL_V1.encode() + b'"' not in self.payload:
            return None
        try:
            record = upgrade_record(decode_record(self.payload))
        except AuditRecordError:
            return None  # not a record we made: sent as it is, and the audit service says why it refuses it
        payload = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return SpoolEntry(subject=self.subject, msg_id=record_msg_id(record), payload=payload)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """An append-only, fsync'd list of SpoolEntry on disk, mirrored in memory."""

    def __init__(self, path: Path, *, max_bytes: int = 1 << 30) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be positive, got {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._entries: deque[tuple[SpoolEntry, bytes]] = deque()  # entry and its spool line
        self._bytes = 0
        self._queued: list[tuple[bytes, SpoolEntry, asyncio.Future[None]]] = []
        self._queued_bytes = 0
        self._lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._loaded = False

    def __len__(self) -> int:
        """Entries on disk plus entries being written."""
        return len(self._entries) + len(self._queued)

    def head(self, count: int) -> list[SpoolEntry]:
        """The oldest `count` entries on disk, in order."""
        out: list[SpoolEntry] = []
        for entry, _ in self._entries:
            if len(out) >= count:
                break
            out.append(entry)
        return out

    async def settle(self) -> None:
        """Wait until every append started so far is on disk (or failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer})

    async def load(self) -> int:
        """Read the spool left by an earlier run; returns how many entries it holds."""
        async with self._lock:
            if not self._loaded:
                entries = await asyncio.to_thread(self._read_file)
                self._entries = deque(entries)
                self._bytes = sum(len(line) for _, line in entries)
                self._loaded = True
            return len(self._entries)

    def _read_file(self) -> list[tuple[SpoolEntry, bytes]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SpoolError(self.path, exc.strerror or str(exc)) from exc
        if data and not data.endswith(b"\n"):
            # A crash in the middle of an append: that record's append never returned, so nobody
            # was told it was kept. Cut it off, or the next append would be glued onto it.
            keep = data.rfind(b"\n") + 1
            log.warning("audit_spool_torn_tail", path=str(self.path), dropped_bytes=len(data) - keep)
            with self.path.open("r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())
            data = data[:keep]
        entries = []
        upgraded = 0
        for number, line in enumerate(data.splitlines(keepends=True), 1):
            try:
                entry = SpoolEntry.from_line(line)
            except ValueError:
                log.error("audit_spool_bad_line", path=str(self.path), line=number)
                continue
            newer = entry.upgraded()
            if newer is not None:
                entry, line, upgraded = newer, newer.to_line(), upgraded + 1
            entries.append((entry, line))
        if upgraded:
            # On disk before any of them is sent: a crash after a send must find the same ids.
            self._rewrite([line for _, line in entries])
            log.info("audit_spool_upgraded", path=str(self.path), records=upgraded)
        return entries

    async def append(self, entry: SpoolEntry) -> None:
        """Write `entry` after every earlier one and fsync; SpoolError (SpoolFull) when it cannot be kept."""
        line = entry.to_line()
        if self._bytes + self._queued_bytes + len(line) > self.max_bytes:
            raise SpoolFull(self.path, self.max_bytes)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((line, entry, future))
        self._queued_bytes += len(line)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name=f"nmc-audit-spool {self.path.name}")
        await future

    async def _write_queued(self) -> None:
        async with self._lock:
            if not self._loaded:
                try:
                    self._entries = deque(await asyncio.to_thread(self._read_file))
                    self._bytes = sum(len(line) for _, line in self._entries)
                    self._loaded = True
                except SpoolError as exc:
                    self._fail(self._take_queued(), exc)
                    return
            while self._queued:
                batch = self._take_queued()
                try:
                    await asyncio.to_thread(self._append_lines, [line for line, _, _ in batch])
                except OSError as exc:
                    self._fail(batch, SpoolError(self.path, exc.strerror or str(exc)))
                    continue
                for line, entry, future in batch:
                    self._entries.append((entry, line))
                    self._bytes += len(line)
                    if not future.done():
                        future.set_result(None)

    def _take_queued(self) -> list[tuple[bytes, SpoolEntry, asyncio.Future[None]]]:
        batch, self._queued, self._queued_bytes = self._queued, [], 0
        return batch

    @staticmethod
    def _fail(batch: Iterable[tuple[bytes, SpoolEntry, asyncio.Future[None]]], exc: SpoolError) -> None:
        for _, _, future in batch:
            if not future.done():
                future.set_exception(exc)

    def _append_lines(self, lines: list[bytes]) -> None:
        new = not self.path.exists()
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _fsync_dir(self.path.parent)  # the file's name must survive a crash too

    async def drop(self, count: int) -> None:
        """Forget the oldest `count` entries (the stream acknowledged them); SpoolError if the file cannot be rewritten."""
        if count <= 0:
            return
        async with self._lock:
            count = min(count, len(self._entries))
            rest = list(self._entries)[count:]
            try:
                await asyncio.to_thread(self._rewrite, [line for _, line in rest])
            except OSError as exc:
                raise SpoolError(self.path, exc.strerror or str(exc)) from exc
            for _ in range(count):
                _, line = self._entries.popleft()
                self._bytes -= len(line)

    def _rewrite(self, lines: list[bytes]) -> None:
        if not lines:
            if self.path.exists():
                with self.path.open("r+b") as fh:
                    fh.truncate(0)
                    os.fsync(fh.fileno())
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)

    def describe(self) -> dict[str, Any]:
        """Path, entry count and bytes, for logs."""
        return {"spool": str(self.path), "spooled": len(self), "spool_bytes": self._bytes}
