"""The node's lifecycle events: a companion that says startup, alive, facts changed and shutdown (docs/events.md).

Each event is a signed CloudEvent (nmc.protocol.events) on
`nmc.events.<collective>.<kind>.<identity>`, published with a plain core
publish (nmc.transport.events): best-effort, never awaited by the stream,
never a reason for the node to fail.

- `startup` when the node starts (the companions start before the node subscribes
  its request subjects; this one is meant to be the last companion), with the
  node's version, agents, classes and facts;
- `alive` every `interval` seconds (the node's `registerinterval`), with its uptime;
- `facts_changed` after the node swapped in new facts, naming the top-level facts
  that were added, removed or changed, with the new values of those still present;
- `shutdown` on a clean stop, flushed before the connection drains;
- whatever the node's agents emit through `Node.emit_event` (`puppet_run`: a Puppet
  run the puppet agent started has ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from nmc import __version__
from nmc.protocol.events import EVENT_KINDS, CloudEvent
from nmc.services.companion import NodeHandle
from nmc.services.factrefresh import changed_facts
from nmc.transport.events import publish_event
from nmc.transport.tasks import cancel_and_wait

__all__ = ["EventPublisher", "EventSettings"]

log = structlog.get_logger("nmc.events")


@dataclass(frozen=True)
class EventSettings:
    """Whether a node publishes lifecycle events, and how often it says it is alive (seconds; 0: never)."""

    enabled: bool = True
    alive_interval: float = 60.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alive_interval) and self.alive_interval >= 0):
            raise ValueError(f"events alive interval must be 0 (off) or a positive number of seconds, "
                             f"got {self.alive_interval!r}")


class EventPublisher:
    """A node companion publishing the node's lifecycle events; one instance per node."""

    def __init__(self, settings: EventSettings | None = None) -> None:
        self.settings = settings or EventSettings()
        self._node: NodeHandle | None = None
        self._facts: Mapping[str, Any] = {}
        self._started = 0.0
        self._task: asyncio.Task[None] | None = None
        self.published = 0  # events handed to the connection, for stats and tests

    async def start(self, node: NodeHandle) -> None:
        """Publish `startup`, then `alive` every interval in the background."""
        if self._node is not None:
            raise RuntimeError("EventPublisher is already running; use one per node")
        self._node = node
        self._started = time.monotonic()
        snap = node.snapshot()
        self._facts = dict(snap.facts)
        await self._publish("startup", {"version": __version__,
                                        "agents": sorted(spec.name for spec in node.agent_specs()),
                                        "classes": list(snap.classes), "facts": dict(snap.facts),
                                        "facts_version": snap.version})
        if self.settings.alive_interval > 0:
            self._task = asyncio.create_task(self._alive_loop(), name=f"nmc-events {node.identity}")

    async def facts_changed(self, node: NodeHandle) -> None:
        """Publish `facts_changed` naming the top-level facts that differ from the last ones seen."""
        snap = node.snapshot()
        changed = changed_facts(self._facts, snap.facts)
        self._facts = dict(snap.facts)
        if not changed:
            return
        await self._publish("facts_changed", {"changed": changed,
                                              "facts": {k: snap.facts[k] for k in changed if k in snap.facts},
                                              "facts_version": snap.version})

    async def emit(self, kind: str, data: Mapping[str, Any]) -> bool:
        """Publish one event of another node kind (`puppet_run`, ...) for the node's agents; whether it went out.

        False, doing nothing, before `start`, after `stop`, for a kind that is not a node's
        or when the publish failed (logged).
        """
        if self._node is None:
            return False
        kind_def = EVENT_KINDS.get(kind)
        if kind_def is None or kind_def.role != "node":
            log.warning("event_not_published", identity=self._node.identity, kind=kind,
                        error="not a kind of event a node publishes")
            return False
        before = self.published
        await self._publish(kind, data)
        return self.published > before

    async def stop(self) -> None:
        """Stop the alive loop and publish `shutdown` (flushed: the connection closes next)."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._node is None:
            return
        await self._publish("shutdown", {"reason": "stopped", "uptime_s": self._uptime()}, flush=True)
        self._node = None

    def _uptime(self) -> float:
        return round(time.monotonic() - self._started, 3)

    async def _alive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.alive_interval)
            node = self._node
            if node is None or node.nc is None or node.nc.is_closed:
                return
            snap = node.snapshot()
            with contextlib.suppress(Exception):  # logged by publish_event; the loop goes on
                await self._publish("alive", {"uptime_s": self._uptime(), "interval_s": self.settings.alive_interval,
                                              "facts_version": snap.version})

    async def _publish(self, kind: str, data: Mapping[str, Any], *, flush: bool = False) -> None:
        node = self._node
        if node is None:
            return
        event = CloudEvent(kind=kind, collective=node.collective, identity=node.identity, data=data, time=time.time())
        try:
            sent = await publish_event(node.nc, node.signer, event, flush=flush)
        except ValueError as exc:  # a fact value JSON cannot hold (NaN): say so, publish nothing
            log.warning("event_not_published", identity=node.identity, kind=kind, error=str(exc))
            return
        if sent:
            self.published += 1
