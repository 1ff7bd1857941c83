"""A small ADR-32 ("NATS micro") service implementation on nats-py.

Why not `nats.micro`: in nats-py 2.16 it cannot disable queue groups (every
node must answer a broadcast), handles one request per endpoint at a time,
sends `"description": null` (fails the jsm.go schema), leaks `repr(exc)` to
callers and cannot add or remove endpoints after start. nmc needs endpoints
that come and go as facts change, every request in its own task, and INFO
that says exactly what is subscribed. The wire format is ADR-32's, checked
against the jsm.go schemas and the npm `nats` services client in the tests.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from nmc.transport.compat import synced_flush

__all__ = ["Endpoint", "MicroService", "control_subjects"]

# A handler returns an error text to count in STATS (ADR-32 counts error answers), or None.
Handler = Callable[[Msg], Awaitable["str | None"]]
ControlHandler = Callable[[Msg], Awaitable[None]]
_SRV = "$SRV"


def control_subjects(verb: str, name: str, instance_id: str) -> tuple[str, str, str]:
    """The three subjects ADR-32 says a service answers a verb on."""
    return f"{_SRV}.{verb}", f"{_SRV}.{verb}.{name}", f"{_SRV}.{verb}.{name}.{instance_id}"


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Endpoint:
    """One subscribed subject of the service and its ADR-32 statistics."""

    name: str
    subject: str
    handler: Handler
    metadata: Mapping[str, str] = field(default_factory=dict)
    queue_group: str | None = None
    num_requests: int = 0
    num_errors: int = 0
    last_error: str = ""
    processing_time_ns: int = 0
    subscription: Subscription | None = None

    def record_error(self, message: str) -> None:
        """Count an error answer (ADR-32 STATS must include errors we answered with, not only crashes)."""
        self.num_errors += 1
        self.last_error = message

    def info(self) -> dict[str, Any]:
        """The endpoint's entry in an INFO response."""
        out: dict[str, Any] = {"name": self.name, "subject": self.subject, "metadata": dict(self.metadata)}
        if self.queue_group:
            out["queue_group"] = self.queue_group
        return out

    def stats(self) -> dict[str, Any]:
        """The endpoint's entry in a STATS response."""
        avg = self.processing_time_ns // self.num_requests if self.num_requests else 0
        out: dict[str, Any] = {
            "name": self.name, "subject": self.subject, "num_requests": self.num_requests,
            "num_errors": self.num_errors, "last_error": self.last_error,
            "processing_time": self.processing_time_ns, "average_processing_time": avg,
        }
        if self.queue_group:
            out["queue_group"] = self.queue_group
        return out


class MicroService:
    """An ADR-32 service instance on one NATS connection; every request runs in its own task."""

    def __init__(self, nc: NATS, *, name: str, version: str, description: str,
                 metadata: Mapping[str, str] | None = None, max_concurrency: int = 256) -> None:
        self._nc = nc
        self.name = name
        self.version = version
        self.description = description
        self.metadata = dict(metadata or {})  # copied: callers keep their dict
        self.id = secrets.token_hex(11)
        self.started = time.time()
        self._endpoints: dict[str, Endpoint] = {}
        self._control: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Bounds memory when a flood arrives; requests beyond it wait in the subscription's queue.
        self._slots = asyncio.Semaphore(max_concurrency)

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints currently subscribed."""
        return list(self._endpoints.values())

    async def start(self) -> None:
        """Subscribe the $SRV control subjects."""
        handlers = {"PING": self._ping, "INFO": self._info, "STATS": self._stats}
        for verb, handler in handlers.items():
            for subject in control_subjects(verb, self.name, self.id):
                self._control.append(await self._nc.subscribe(subject, cb=self._control_cb(handler)))
        # Visible to `nats micro ls` the moment start() returns (see nmc.transport.compat).
        await synced_flush(self._nc)

    def _control_cb(self, build: Callable[[], dict[str, Any]]) -> ControlHandler:
        async def answer(msg: Msg) -> None:
            if msg.reply:
                await self._nc.publish(msg.reply, json.dumps(build()).encode())
        return answer

    async def add_endpoint(self, name: str, subject: str, handler: Handler, *,
                           metadata: Mapping[str, str] | None = None, queue_group: str | None = None) -> Endpoint:
        """Subscribe `subject`; replaces an endpoint of the same name."""
        if name in self._endpoints:
            await self.remove_endpoint(name)
        ep = Endpoint(name=name, subject=subject, handler=handler, metadata=dict(metadata or {}),
                      queue_group=queue_group)
        ep.subscription = await self._nc.subscribe(subject, queue=queue_group or "", cb=self._dispatch(ep))
        self._endpoints[name] = ep
        return ep

    async def remove_endpoint(self, name: str) -> None:
        """Unsubscribe one endpoint (facts changed, agent removed)."""
        ep = self._endpoints.pop(name, None)
        if ep is not None and ep.subscription is not None:
            await ep.subscription.unsubscribe()

    def _dispatch(self, ep: Endpoint) -> ControlHandler:
        async def on_message(msg: Msg) -> None:
            await self._slots.acquire()
            task = asyncio.create_task(self._run(ep, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return on_message

    async def _run(self, ep: Endpoint, msg: Msg) -> None:
        start = time.perf_counter_ns()
        ep.num_requests += 1
        try:
            error = await ep.handler(msg)
            if error:
                ep.record_error(error)
        except Exception as exc:  # noqa: BLE001 - a handler bug must never kill the service
            ep.record_error(f"{type(exc).__name__}: {exc}"[:200])
        finally:
            ep.processing_time_ns += time.perf_counter_ns() - start
            self._slots.release()

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop taking requests, let running ones finish for up to `grace` seconds."""
        for sub in self._control:
            await sub.unsubscribe()
        self._control.clear()
        for name in list(self._endpoints):
            await self.remove_endpoint(name)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)

    def _identity(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "version": self.version, "metadata": dict(self.metadata)}

    def _ping(self) -> dict[str, Any]:
        return {"type": "io.nats.micro.v1.ping_response", **self._identity()}

    def _info(self) -> dict[str, Any]:
        return {"type": "io.nats.micro.v1.info_response", **self._identity(),
                "description": self.description, "endpoints": [e.info() for e in self.endpoints]}

    def _stats(self) -> dict[str, Any]:
        return {"type": "io.nats.micro.v1.stats_response", **self._identity(),
                "started": _rfc3339(self.started), "endpoints": [e.stats() for e in self.endpoints]}
