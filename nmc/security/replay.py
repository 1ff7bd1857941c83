"""Refuse a request id seen before within its ttl window."""

from __future__ import annotations

import heapq
import math

from nmc.security.errors import ReplayError

__all__ = ["ReplayCache"]


class ReplayCache:
    """Remembers request ids until they expire; bounded to ``max_entries``.

    Pass ``expires_at = request time + ttl``: that is the moment the time
    check starts refusing the request anyway, so the id need not be kept
    longer. When full, the entry closest to expiry is dropped first, since
    it is the one the time check will cover soonest.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a whole number of at least 1, not {max_entries!r}")
        self._max_entries = max_entries
        self._expiry: dict[str, float] = {}
        # A min-heap by expiry alongside the dict: one heap entry per live id,
        # so eviction is O(log n) and never scans the whole cache.
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        """How many ids are remembered (expired ones may linger until the next check)."""
        return len(self._expiry)

    def check_and_remember(self, request_id: str, expires_at: float, now: float) -> None:
        """Raise ReplayError if ``request_id`` is remembered and unexpired at ``now``; else remember it."""
        if not (math.isfinite(expires_at) and math.isfinite(now)):
            # NaN would break the heap order and make the id unevictable.
            raise ValueError(f"expires_at {expires_at!r} and now {now!r} must be finite numbers")
        self._evict_expired(now)
        if request_id in self._expiry:
            raise ReplayError(request_id)
        if expires_at < now:
            return  # already outside its window: nothing left to protect
        while len(self._expiry) >= self._max_entries and self._heap:
            self._pop_earliest()
        self._expiry[request_id] = expires_at
        heapq.heappush(self._heap, (expires_at, request_id))

    def _evict_expired(self, now: float) -> None:
        # An entry is live while now <= expires_at, matching check_time's `<= ttl`.
        heap = self._heap
        while heap and heap[0][0] < now:
            self._pop_earliest()

    def _pop_earliest(self) -> None:
        while self._heap:
            expires_at, request_id = heapq.heappop(self._heap)
            if self._expiry.get(request_id) == expires_at:
                del self._expiry[request_id]
                return
