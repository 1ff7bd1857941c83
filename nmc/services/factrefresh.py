"""The fact refresher: a node companion that keeps the node's facts current.

MCollective re-read facts when `fact_cache_time` expired; nmc does it on an
interval and on SIGHUP, and only touches the node when something changed,
because a change re-subscribes fact subjects (a node that became role=db must
stop hearing role=web requests) and bumps the facts version that caches key on.
A refresh that fails keeps the old facts: a daemon never dies, nor goes deaf,
because someone saved a broken YAML file.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from nmc.services.companion import NodeHandle
from nmc.services.facts import FactError, FactSources, NodeFacts
from nmc.transport.tasks import cancel_and_wait

__all__ = ["FactRefresher"]

log = structlog.get_logger("nmc.factrefresh")
_ABSENT = object()


def changed_facts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Top-level fact names whose value differs (added, removed or changed), sorted."""
    return sorted(k for k in old.keys() | new.keys() if old.get(k, _ABSENT) != new.get(k, _ABSENT))


@dataclass(eq=False)
class FactRefresher:
    """Re-collects `sources` every `interval` seconds (0: only when asked) and swaps changes into the node.

    One instance per node: it remembers the node it was started with.
    """

    sources: FactSources
    interval: float = 300.0
    _node: NodeHandle | None = field(default=None, init=False, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    # SIGHUP and the interval may fire together; two collections must not race to update_facts.
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval) and self.interval >= 0):
            raise ValueError(f"fact refresh interval must be 0 (off) or a positive number of seconds, "
                             f"got {self.interval!r}")

    async def start(self, node: NodeHandle) -> None:
        """Remember the node and, unless the interval is 0, start refreshing in the background."""
        if self._node is not None and self._node is not node:
            raise RuntimeError("a FactRefresher serves one node; make one per node")
        self._node = node
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"nmc-factrefresh {node.identity}")

    async def facts_changed(self, node: NodeHandle) -> None:
        """Nothing to do: the refresher is usually the one that changed them."""

    async def stop(self) -> None:
        """Stop the background refresh; a collection in flight is cancelled (facter is killed)."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh_now()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one bad refresh
                log.exception("facts_refresh_crashed", identity=self._identity, error=str(exc) or type(exc).__name__)

    @property
    def _identity(self) -> str:
        return self._node.identity if self._node is not None else ""

    async def refresh_now(self) -> bool:
        """Collect once; True when facts or classes changed and the node now has them.

        Unchanged facts leave the node alone (no re-subscription, same version);
        a failed collection logs `facts_refresh_failed` and keeps the old facts.
        """
        node = self._node
        if node is None:
            raise RuntimeError("FactRefresher.refresh_now() before start(node)")
        async with self._lock:
            current = node.snapshot()
            try:
                fresh = await self.sources.collect(version=current.version + 1)
            except FactError as exc:
                log.warning("facts_refresh_failed", identity=node.identity, source=exc.source, reason=exc.reason)
                return False
            changed = changed_facts(current.facts, fresh.facts)
            classes_changed = fresh.classes != current.classes
            if not changed and not classes_changed:
                log.debug("facts_unchanged", identity=node.identity, version=current.version)
                return False
            await node.update_facts(NodeFacts(facts=fresh.facts, classes=fresh.classes,
                                              version=current.version + 1))
            log.info("facts_changed", identity=node.identity, version=current.version + 1, changed=changed[:20],
                     changed_count=len(changed), classes_changed=classes_changed)
            return True
