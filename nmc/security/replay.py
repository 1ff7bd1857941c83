"""Refuse a request id seen before within its validity, and bound what remembering costs.

The policy, with no I/O (the node keeps it in a file: nmc/services/replaylog.py):

- an id is remembered until ``request time + ttl``, the moment the time check starts
  refusing the request anyway;
- a live id is **never** forgotten to make room. A full cache, or a caller that already
  holds its quota of live ids, gets the new request refused (`ReplayCapacityError`):
  refusing a request is a denial of service the caller can see and retry, forgetting
  an id lets an old request run twice;
- ``not_before``: after the node lost its memory of ids (machine crash, file gone), a
  request issued at or before that moment may have run already, so it is refused
  (`StaleRequestError`) instead of risked.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Iterator

from nmc.security.errors import ReplayCapacityError, ReplayError, StaleRequestError

__all__ = ["DEFAULT_CAPACITY", "ReplayCache"]

DEFAULT_CAPACITY = 100_000


def _whole(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


class ReplayCache:
    """Remembers request ids until they expire: at most ``capacity``, at most ``per_caller`` per caller.

    ``per_caller`` defaults to a tenth of ``capacity``: one caller (any valid certificate,
    even one the policy denies everything) can hold at most that share, so ten callers
    acting together are needed to make the node refuse everyone's new requests.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, per_caller: int | None = None, *,
                 not_before: float = -math.inf) -> None:
        self.capacity = _whole("capacity", capacity)
        self.per_caller = _whole("per_caller", per_caller) if per_caller is not None else max(1, capacity // 10)
        self.not_before = not_before
        self._entries: dict[str, tuple[float, str]] = {}  # request id -> (expires_at, caller)
        self._callers: dict[str, int] = {}  # caller -> live ids
        # A min-heap by expiry alongside the dict, so dropping expired ids never scans the cache.
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        """How many ids are remembered (expired ones may linger until the next call)."""
        return len(self._entries)

    def held_by(self, caller: str) -> int:
        """How many remembered ids belong to `caller`."""
        return self._callers.get(caller, 0)

    def entries(self) -> Iterator[tuple[str, str, float]]:
        """Every remembered ``(request_id, caller, expires_at)``, soonest expiry not guaranteed first."""
        for request_id, (expires_at, caller) in self._entries.items():
            yield request_id, caller, expires_at

    def check(self, request_id: str, request_time: float, now: float) -> None:
        """Raise StaleRequestError or ReplayError if this request may have run here already."""
        _finite(request_time, now)
        if request_time <= self.not_before:
            raise StaleRequestError(request_time, self.not_before)
        self._drop_expired(now)
        if request_id in self._entries:
            raise ReplayError(request_id)

    def remember(self, request_id: str, caller: str, expires_at: float, now: float) -> bool:
        """Remember a request about to run; False when it is already outside its window (nothing kept).

        Raises ReplayError when the id is live, ReplayCapacityError when there is no room.
        """
        _finite(expires_at, now)
        self._drop_expired(now)
        if request_id in self._entries:
            raise ReplayError(request_id)
        if expires_at < now:
            return False
        if len(self._entries) >= self.capacity:
            raise ReplayCapacityError("node", self.capacity, caller)
        if self._callers.get(caller, 0) >= self.per_caller:
            raise ReplayCapacityError("caller", self.per_caller, caller)
        self._add(request_id, caller, expires_at)
        return True

    def restore(self, request_id: str, caller: str, expires_at: float, now: float) -> None:
        """Take back an id remembered before a restart; no limit applies (a live id is never dropped)."""
        _finite(expires_at, now)
        if expires_at < now:
            return
        old = self._entries.get(request_id)
        if old is not None:
            if old[0] >= expires_at:
                return
            self._discard(request_id)
        self._add(request_id, caller, expires_at)

    def _add(self, request_id: str, caller: str, expires_at: float) -> None:
        caller = sys.intern(caller)  # one string per caller, not one per remembered request
        self._entries[request_id] = (expires_at, caller)
        self._callers[caller] = self._callers.get(caller, 0) + 1
        heapq.heappush(self._heap, (expires_at, request_id))

    def _discard(self, request_id: str) -> None:
        _, caller = self._entries.pop(request_id)
        left = self._callers[caller] - 1
        if left:
            self._callers[caller] = left
        else:
            del self._callers[caller]

    def _drop_expired(self, now: float) -> None:
        # An entry is live while now <= expires_at, matching check_time's `<= ttl`.
        heap = self._heap
        while heap and heap[0][0] < now:
            expires_at, request_id = heapq.heappop(heap)
            entry = self._entries.get(request_id)
            if entry is not None and entry[0] == expires_at:  # else a stale heap item of a re-added id
                self._discard(request_id)


def _finite(*values: float) -> None:
    # NaN would break the heap order and make an id unforgettable.
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise ValueError(f"times must be finite numbers, got {values!r}")
