"""The audit service's memory of what it already wrote: a bounded set of recent record ids.

Why derive it from the file instead of keeping a second file of ids: the
JSON-lines file *is* the durable record of what was written. An ids file
written next to it could disagree after a crash (record written, id not yet,
or the other way round); ids read back from the file's tail cannot. At
start the service reads backwards through the current file and its rotated
predecessors until it has `capacity` ids or runs out of files.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = ["RecentIds", "read_lines_backwards"]

_CHUNK = 1 << 20


class RecentIds:
    """The last `capacity` ids added; membership is O(1), the oldest is forgotten first."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, msg_id: object) -> bool:
        """Whether `msg_id` is one of the remembered ids."""
        return msg_id in self._ids

    def __len__(self) -> int:
        """How many ids are remembered."""
        return len(self._ids)

    def add(self, msg_id: str) -> None:
        """Remember `msg_id` as the newest id."""
        self._ids[msg_id] = None
        self._ids.move_to_end(msg_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    @classmethod
    def from_files(cls, files: Iterable[Path], capacity: int, msg_id_of: Callable[[str], str | None]) -> RecentIds:
        """The newest `capacity` ids found in `files` (newest file first), read from their ends."""
        found: list[str] = []
        for path in files:
            for line in read_lines_backwards(path):
                msg_id = msg_id_of(line)
                if msg_id is not None:
                    found.append(msg_id)
                    if len(found) >= capacity:
                        break
            if len(found) >= capacity:
                break
        recent = cls(capacity)
        for msg_id in reversed(found):
            recent.add(msg_id)
        return recent


def read_lines_backwards(path: Path) -> Iterator[str]:
    """The complete lines of `path`, last first (nothing if it does not exist); reads in 1 MiB chunks."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    with fh:
        position = fh.seek(0, os.SEEK_END)
        rest = b""
        while position > 0:
            step = min(_CHUNK, position)
            position -= step
            fh.seek(position)
            chunk = fh.read(step) + rest
            lines = chunk.split(b"\n")
            rest = lines[0]  # may be the end of a line that started in the previous chunk
            for raw in reversed(lines[1:]):
                if raw:
                    yield raw.decode("utf-8", "replace")
        if rest:
            yield rest.decode("utf-8", "replace")
