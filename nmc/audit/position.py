"""Where the audit service is in NMC_AUDIT: the next stream sequence to read, kept in a small file.

The service reads the stream without a consumer (nmc.audit.service), so the
broker keeps no position for it: this file does. It is one line of JSON::

    {"stream":"NMC_AUDIT","stream_created":"2026-12-03T17:04:20.123456+00:00","next_seq":1235}

`next_seq` is the first stream sequence not yet handled: every record before
it is in the audit file (and syslog), or was dropped as a duplicate, refused or
found aged out. `stream_created` is when the broker made the stream the
sequence belongs to; a stream made again (its store lost, deleted and
re-created) numbers from 1 and gets another time, and the service then starts
at its first record. The service saves the file only after the records before
`next_seq` were written, written to a temporary file beside it, fsync'd and
renamed over it (and the directory fsync'd), so after a crash it holds the old
position or the new one, never half of either; reading again from an older one
re-reads records the file already has, which the service recognises
(nmc.audit.dedup).

The default place is beside the audit file, `<audit.file>.position`
(`audit.position_file` moves it): a new audit file starts with no position,
so the records the stream still has are written to it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from nmc.audit.errors import PositionError
from nmc.audit.stream import STREAM

__all__ = ["FILE_MODE", "Position", "PositionCorrupt", "PositionFile", "default_position_file"]

FILE_MODE = 0o640
_MAX_BYTES = 4096  # a position is one short line; anything longer is not one


class PositionCorrupt(PositionError):
    """The position file exists and can be read, but holds no position (a partial copy, an edit, a wrong file)."""


@dataclass(frozen=True)
class Position:
    """The next stream sequence to read, and when the stream it belongs to was created (None: not known)."""

    next_seq: int
    stream_created: str | None = None
    stream: str = STREAM

    def __post_init__(self) -> None:
        if isinstance(self.next_seq, bool) or not isinstance(self.next_seq, int) or self.next_seq < 1:
            raise ValueError(f"next_seq must be a whole number of at least 1, got {self.next_seq!r}")

    def to_bytes(self) -> bytes:
        """The file's contents: one JSON line."""
        body = {"stream": self.stream, "stream_created": self.stream_created, "next_seq": self.next_seq}
        return (json.dumps(body, separators=(",", ":")) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Position:
        """Parse the file's contents; ValueError saying what is wrong."""
        if len(data) > _MAX_BYTES:
            raise ValueError(f"{len(data)} bytes, not one short JSON line")
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(body, dict) or "next_seq" not in body:
            raise ValueError('not a JSON object with "next_seq"')
        created = body.get("stream_created")
        if created is not None and not isinstance(created, str):
            raise ValueError(f"stream_created must be a string, got {created!r}")
        stream = body.get("stream", STREAM)
        if not isinstance(stream, str):
            raise ValueError(f"stream must be a string, got {stream!r}")
        return cls(next_seq=body["next_seq"], stream_created=created, stream=stream)


def default_position_file(audit_file: Path) -> Path:
    """`<audit file>.position`, beside the file whose contents it bookmarks."""
    return audit_file.with_name(audit_file.name + ".position")


class PositionFile:
    """Loads and atomically saves the audit service's `Position` (blocking file I/O: call it in a thread)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> Position | None:
        """The saved position; None when there is no file yet.

        PositionCorrupt when the file holds something else, PositionError when it cannot be read at all.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PositionError(str(self.path), f"cannot read the audit position: {exc.strerror or exc}") from exc
        try:
            return Position.from_bytes(data)
        except ValueError as exc:
            raise PositionCorrupt(str(self.path), f"not an audit position: {exc}") from exc

    def save(self, position: Position) -> None:
        """Replace the file with `position`: temporary file, fsync, rename, fsync of the directory; PositionError."""
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(position.to_bytes())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temporary, self.path)
            _fsync_directory(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise PositionError(str(self.path), f"cannot save the audit position: {exc.strerror or exc}") from exc


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (where the platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself is atomic
    finally:
        os.close(fd)
