"""The node's replay cache in a file, so a restart does not make it forget which requests ran.

One line per request id the node accepted, appended before the action runs:
``[expires_at, caller, request_id]`` (JSON). The first line says which boot of the
machine wrote the file (``/proc/sys/kernel/random/boot_id``); a clean stop appends
``{"clean": time}`` and fsyncs. Appends are plain writes, not fsync'd: after a crash of
the *process* the kernel still has them, so a file written during this boot is complete.
Only a crash of the *machine* can lose the tail, and then the file is from an earlier
boot and was not closed cleanly. At start:

| the file | what the node does |
| --- | --- |
| absent, and no `<file>.started` marker | a new node: starts empty |
| written during this boot, or closed cleanly | loads the live ids |
| absent although the marker says it existed, unreadable, or from an earlier boot without a clean stop | **state lost**: refuses every request issued up to its start + the clock-skew allowance (`StaleRequestError`), because any of them may have run already |

`<file>.lock` is both the marker and an exclusive lock (flock) that keeps a second node
process away from the same file; deleting the replay file but not the marker therefore
counts as lost state, deleting both makes the node new. The state-lost bound is kept in
the file's first line until no request it covers can be valid any more, so a second
restart does not forget it. The file is rewritten with only the live ids at start and
whenever it holds more than twice the live ids plus 1,024 lines, so it stays below
``2 * capacity + 1025`` lines.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from nmc.errors import NodeError
from nmc.security.replay import ReplayCache

__all__ = ["ReplayJournal", "ReplayLogError", "read_boot_id"]

log = structlog.get_logger("nmc.node")

_MAGIC = "nmc_replay"
_VERSION = 1
_SLACK = 1024  # lines beyond twice the live ids before the file is rewritten
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class ReplayLogError(NodeError, OSError):
    """The replay file cannot be opened or written; `reason` is one line naming the file.

    An OSError, so every daemon start-up that reports file problems in one line reports this too.
    """


def read_boot_id(path: Path = _BOOT_ID) -> str | None:
    """This boot of the machine (Linux); None where the kernel does not say, so only a clean stop counts."""
    try:
        return path.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class _Loaded:
    boot: str | None
    not_before: float
    clean: bool
    entries: list[tuple[float, str, str]]


class _Unreadable(Exception):
    pass


def _parse(text: str) -> _Loaded:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        # A torn last line: the process died inside that write, before the action it records ran.
        lines.pop()
    if not lines:
        raise _Unreadable("empty")
    try:
        head = json.loads(lines[0])
    except ValueError as exc:
        raise _Unreadable("its first line is not a replay-file header") from exc
    if not isinstance(head, dict) or head.get(_MAGIC) != _VERSION:
        raise _Unreadable("its first line is not a replay-file header")
    boot = head.get("boot")
    not_before = head.get("not_before", -math.inf)
    if not (boot is None or isinstance(boot, str)) or not _is_number(not_before, allow_none=True):
        raise _Unreadable("its header has the wrong shape")
    entries: list[tuple[float, str, str]] = []
    clean = False
    for number, line in enumerate(lines[1:], start=2):
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise _Unreadable(f"line {number} is not JSON") from exc
        if isinstance(item, dict) and _is_number(item.get("clean")):
            clean = True
            continue
        if (not isinstance(item, list) or len(item) != 3 or not _is_number(item[0])
                or not isinstance(item[1], str) or not isinstance(item[2], str)):
            raise _Unreadable(f"line {number} is not a replay entry")
        clean = False  # entries after a clean mark: that run did not end cleanly
        entries.append((float(item[0]), item[1], item[2]))
    return _Loaded(boot, -math.inf if not_before is None else float(not_before), clean, entries)


def _is_number(value: Any, allow_none: bool = False) -> bool:
    if value is None:
        return allow_none
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class ReplayJournal:
    """An open replay file and the cache it backs; `open()` loads it, `record()` appends, `close()` ends cleanly."""

    def __init__(self, path: Path, cache: ReplayCache, lock_fd: int, state: str, boot: str | None) -> None:
        self.path = path
        self.cache = cache
        self.state = state  # "new", "loaded" or "lost: <why>"
        self._lock_fd: int | None = lock_fd
        self._fd: int | None = None
        self._boot = boot
        self._lines = 0

    @classmethod
    def open(cls, path: Path, *, capacity: int, per_caller: int, skew: float, max_ttl: float, now: float,
             boot: str | None = None) -> ReplayJournal:
        """Load (or start) the replay file at `path`; ReplayLogError when it cannot be used at all."""
        boot = read_boot_id() if boot is None else boot
        lock = path.with_name(path.name + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            had_marker = lock.exists()
            lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ReplayLogError(f"replay file {path}: {exc.strerror or exc}") from exc
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReplayLogError(f"replay file {path} is in use by another node process: "
                                     "each node needs its own security.replay_file") from None
            if not had_marker:
                _fsync_dir(path.parent)  # the marker must outlive a machine crash as well as the file does
            try:
                text: bytes = path.read_bytes()
            except FileNotFoundError:
                text = b""
            state, loaded = cls._judge(text, had_marker, boot)
            cache = ReplayCache(capacity, per_caller)
            if loaded is not None:
                if loaded.not_before + max_ttl >= now:
                    cache.not_before = loaded.not_before  # an earlier loss still covers requests valid now
                for expires_at, caller, request_id in loaded.entries:
                    cache.restore(request_id, caller, expires_at, now)
            if state.startswith("lost"):
                cache.not_before = max(cache.not_before, now + skew)
            journal = cls(path, cache, lock_fd, state, boot)
            journal._rewrite()
        except ReplayLogError:
            os.close(lock_fd)
            raise
        except OSError as exc:
            os.close(lock_fd)
            raise ReplayLogError(f"replay file {path}: {exc.strerror or exc}") from exc
        return journal

    @staticmethod
    def _judge(text: bytes, had_marker: bool, boot: str | None) -> tuple[str, _Loaded | None]:
        if not text:
            return ("lost: the replay file is missing or empty", None) if had_marker else ("new", None)
        try:
            loaded = _parse(text.decode("utf-8"))
        except UnicodeDecodeError:
            return "lost: the replay file is unreadable (not UTF-8)", None
        except _Unreadable as exc:
            return f"lost: the replay file is unreadable ({exc})", None
        if loaded.clean or (boot is not None and loaded.boot == boot):
            return "loaded", loaded
        return "lost: the machine restarted since the file was written, and the node did not stop cleanly", loaded

    def record(self, request_id: str, caller: str, expires_at: float) -> None:
        """Append one accepted id (before its action runs); ReplayLogError when the write fails."""
        if self._fd is None:
            raise ReplayLogError(f"replay file {self.path} is closed")
        line = (json.dumps([expires_at, caller, request_id], ensure_ascii=False) + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            raise ReplayLogError(f"cannot write to replay file {self.path}: {exc.strerror or exc}") from exc
        if written != len(line):
            raise ReplayLogError(f"cannot write to replay file {self.path}: short write (disk full?)")
        self._lines += 1
        if self._lines > 2 * len(self.cache) + _SLACK:
            try:
                self._rewrite()
            except OSError as exc:  # the old file is still complete: keep appending to it
                log.warning("replay_file_compaction_failed", path=str(self.path), reason=exc.strerror or str(exc))
                self._lines = 0

    def close(self) -> None:
        """Mark the file cleanly closed and fsync it: a machine restart after this loses nothing."""
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                os.write(fd, (json.dumps({"clean": _now()}) + "\n").encode("ascii"))
                os.fsync(fd)
        except OSError as exc:
            log.warning("replay_file_close_failed", path=str(self.path), reason=exc.strerror or str(exc))
        finally:
            if fd is not None:
                os.close(fd)
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None

    def _rewrite(self) -> None:
        """Replace the file by a header and the live ids: written aside, renamed over, then appended to."""
        now = _now()
        head = {_MAGIC: _VERSION, "boot": self._boot, "written": now,
                "not_before": self.cache.not_before if math.isfinite(self.cache.not_before) else None}
        lines = [json.dumps(head)] + [json.dumps([exp, caller, rid], ensure_ascii=False)
                                       for rid, caller, exp in self.cache.entries() if exp >= now]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(28, "short write (disk full?)")
            os.rename(tmp, self.path)
        finally:
            os.close(fd)
        old, self._fd = self._fd, os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if old is not None:
            os.close(old)
        self._lines = len(lines) - 1


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> float:
    return time.time()
