"""Where the audit service writes records: a size-rotated file and, optionally, syslog.

`FileSink` writes one line per record (JSON lines, or MCollective's format),
flushed and fsync'd before `write()` returns; when the next line would take
the file past `rotate_bytes` it is renamed to `<file>.1` (`.1` to `.2`, ...,
keeping `keep` old files) and a new file is started, the way logrotate does
it, so shippers that follow a file by name and inode (Filebeat, Vector,
Fluent Bit, rsyslog imfile) read every line exactly once.

`SyslogSink` sends RFC 5424 messages over UDP, TCP (RFC 6587 octet
counting) or a unix socket (datagram, like /dev/log; stream as a fallback).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from nmc.audit.dedup import RecentIds
from nmc.audit.errors import SinkError
from nmc.audit.formats import (
    FILE_FORMATS,
    SYSLOG_FACILITIES,
    json_line,
    line_msg_id,
    mcollective_line,
    octet_counted,
    syslog_message,
)

__all__ = ["FileSink", "SyslogSink", "SyslogTarget"]

log = structlog.get_logger("nmc.audit")


FILE_MODE = 0o640  # a new audit file: owner read-write, group read, nobody else


class FileSink:
    """Appends records to `path` as lines (a new file is created FILE_MODE), rotating by size."""

    def __init__(self, path: Path, *, format: str = "json", rotate_bytes: int = 100 << 20, keep: int = 10) -> None:
        if format not in FILE_FORMATS:
            raise ValueError(f"audit file format must be one of {', '.join(FILE_FORMATS)}, got {format!r}")
        if rotate_bytes <= 0:
            raise ValueError(f"audit rotate_bytes must be positive, got {rotate_bytes}")
        if keep < 0:
            raise ValueError(f"audit keep must be 0 or more, got {keep}")
        self.path = Path(path)
        self.format = format
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self._render: Callable[[Mapping[str, Any]], str] = json_line if format == "json" else mcollective_line
        self._size: int | None = None
        self.rotations = 0

    def files(self) -> list[Path]:
        """The current file and its rotated predecessors, newest first."""
        return [self.path] + [self._rotated(i) for i in range(1, self.keep + 1)]

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    async def open(self, dedup_capacity: int) -> RecentIds:
        """Make the directory, cut a torn last line, and read back the ids of the newest records written."""
        try:
            return await asyncio.to_thread(self._open, dedup_capacity)
        except OSError as exc:
            raise SinkError(str(self.path), exc.strerror or str(exc)) from exc

    def _open(self, dedup_capacity: int) -> RecentIds:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with self.path.open("r+b") as fh:
                size = fh.seek(0, os.SEEK_END)
                if size:
                    fh.seek(max(0, size - 1))
                    if fh.read(1) != b"\n":
                        # Written but never acknowledged (a crash mid-write): the stream redelivers it.
                        keep = self._last_newline(fh, size)
                        fh.truncate(keep)
                        os.fsync(fh.fileno())
                        log.warning("audit_file_torn_tail", file=str(self.path), dropped_bytes=size - keep)
        self._size = self.path.stat().st_size if self.path.exists() else 0
        return RecentIds.from_files(self.files(), dedup_capacity, line_msg_id)

    @staticmethod
    def _last_newline(fh: Any, size: int) -> int:
        position = size
        while position > 0:
            step = min(65536, position)
            position -= step
            fh.seek(position)
            chunk = fh.read(step)
            index = chunk.rfind(b"\n")
            if index >= 0:
                return position + index + 1
        return 0

    async def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append the records' lines, flushed and fsync'd; SinkError when that fails."""
        lines = [(self._render(r) + "\n").encode("utf-8") for r in records]
        try:
            await asyncio.to_thread(self._write_lines, lines)
        except OSError as exc:
            self._size = None  # unknown after a failure: measure again next time
            raise SinkError(str(self.path), exc.strerror or str(exc)) from exc

    def _write_lines(self, lines: list[bytes]) -> None:
        if self._size is None:
            self._size = self.path.stat().st_size if self.path.exists() else 0
        pending: list[bytes] = []
        pending_size = 0
        for line in lines:
            if self._size + pending_size + len(line) > self.rotate_bytes and self._size + pending_size > 0:
                self._append(pending)
                self._rotate()
                pending, pending_size = [], 0
            pending.append(line)
            pending_size += len(line)
        self._append(pending)

    def _append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        # Created owner read-write, group read (the umask may take more away): the trail names who
        # ran what where, and its redacted inputs are still nobody else's business.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        with os.fdopen(fd, "ab") as fh:
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
            self._size = fh.tell()

    def _rotate(self) -> None:
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            self._rotated(self.keep).unlink(missing_ok=True)
            for index in range(self.keep - 1, 0, -1):
                if self._rotated(index).exists():
                    os.replace(self._rotated(index), self._rotated(index + 1))
            os.replace(self.path, self._rotated(1))
        self._size = 0
        self.rotations += 1
        log.info("audit_file_rotated", file=str(self.path), keep=self.keep)

    async def close(self) -> None:
        """Nothing stays open between writes; kept for symmetry with SyslogSink."""


@dataclass(frozen=True)
class SyslogTarget:
    """Where syslog messages go: `udp://host:port`, `tcp://host:port` or `unix:///path`."""

    transport: str  # udp | tcp | unix (datagram) | unix-stream
    host: str = ""
    port: int = 514
    path: str = ""

    @classmethod
    def parse(cls, url: str) -> SyslogTarget:
        """Parse an `audit.syslog` value; ValueError with the reason when it is not one."""
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme == "unix":
            path = parts.path or parts.netloc
            if not path:
                raise ValueError(f"syslog target {url!r}: unix:// needs a socket path, e.g. unix:///dev/log")
            return cls("unix", path=path)
        if scheme not in ("udp", "tcp"):
            raise ValueError(f"syslog target {url!r}: use udp://host:port, tcp://host:port or unix:///path")
        if not parts.hostname:
            raise ValueError(f"syslog target {url!r}: no host")
        try:
            port = parts.port or 514
        except ValueError as exc:
            raise ValueError(f"syslog target {url!r}: {exc}") from None
        return cls(scheme, host=parts.hostname, port=port)

    def __str__(self) -> str:
        """The URL form."""
        return f"unix://{self.path}" if self.transport.startswith("unix") else f"{self.transport}://{self.host}:{self.port}"


class SyslogSink:
    """Sends each record as one RFC 5424 message; reconnects TCP on the next write after a failure."""

    def __init__(self, target: SyslogTarget, *, facility: str = "local0") -> None:
        if facility not in SYSLOG_FACILITIES:
            raise ValueError(f"unknown syslog facility {facility!r} (use one of {', '.join(SYSLOG_FACILITIES)})")
        self.target = target
        self.facility = SYSLOG_FACILITIES[facility]
        self._sock: socket.socket | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Send every record; SinkError when the receiver cannot be reached."""
        messages = [syslog_message(r, facility=self.facility) for r in records]
        try:
            if self.target.transport in ("tcp", "unix-stream"):
                await self._send_stream(messages)
            else:
                await self._send_datagrams(messages)
        except OSError as exc:
            await self.close()
            raise SinkError(f"syslog {self.target}", exc.strerror or str(exc)) from exc

    async def _send_stream(self, messages: list[bytes]) -> None:
        if self._writer is None or self._writer.is_closing():
            if self.target.transport == "tcp":
                _, self._writer = await asyncio.open_connection(self.target.host, self.target.port)
            else:
                _, self._writer = await asyncio.open_unix_connection(self.target.path)
        self._writer.write(b"".join(octet_counted(m) for m in messages))
        await self._writer.drain()

    async def _send_datagrams(self, messages: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        if self._sock is None:
            if self.target.transport == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                address: Any = self.target.path
            else:
                info = await loop.getaddrinfo(self.target.host, self.target.port, type=socket.SOCK_DGRAM)
                family, _, _, _, address = info[0]
                sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.connect(address)
            except OSError as exc:
                sock.close()
                if self.target.transport == "unix" and exc.errno == getattr(os, "EPROTOTYPE", None):
                    # A stream unix socket (some syslog daemons): use the stream framing instead.
                    self.target = SyslogTarget("unix-stream", path=self.target.path)
                    await self._send_stream(messages)
                    return
                raise
            self._sock = sock
        for message in messages:
            await loop.sock_sendall(self._sock, message)

    async def close(self) -> None:
        """Close the socket or connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = None
