"""Reading lifecycle events: live (`watch_events`) and stored in NMC_EVENTS (`query_events`), verified.

Every event is checked with nmc.security.events.EventVerifier before it is
yielded as genuine: signature, the signer's role, identity == certificate
name == subject token. A refused one is yielded only when the caller asks for
them (`unverified`), marked, so it is never shown as genuine.

`watch_events` subscribes to `nmc.events.>` (or one collective's); the broker
lets every user do that (events are fleet state, docs/security.md).
`query_events` reads NMC_EVENTS without a consumer, one stored message at a
time with `STREAM.MSG.GET` (nmc.security.permissions, rule 2), from the first
message stored at or after `since`.

`FactView` keeps what a `-F/-C/-A` filter is evaluated on: the registry record
of each identity (read once, and again at most every `REREAD` seconds for an
identity it does not know), overlaid with the facts, classes and agents a
`startup` event carries and the values a `facts_changed` event carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js.errors import APIError, NotFoundError

from nmc.errors import ClientError, reason_of
from nmc.protocol.events import CloudEvent
from nmc.protocol.filter import Node as FilterTree
from nmc.protocol.filter import matches
from nmc.protocol.registry import DEFAULT_BUCKET
from nmc.protocol.subjects import event_query_subject, event_subjects
from nmc.security.events import EventRefused, EventVerifier

__all__ = ["EVENTS_STREAM", "EventStreamError", "FactView", "SeenEvent", "query_events", "watch_events"]

log = structlog.get_logger("nmc.events")
EVENTS_STREAM = "NMC_EVENTS"
_NO_MESSAGE = 10037  # nats-server: no message at or after the sequence
_QUEUE = 10_000  # events waiting to be shown; beyond it the newest are dropped (and counted)


class EventStreamError(ClientError):
    """NMC_EVENTS cannot be read (no stream, no JetStream, no permission); one line."""


@dataclass(frozen=True)
class SeenEvent:
    """One event as received: the event (None when it did not decode), and whether it is genuine."""

    subject: str
    event: CloudEvent | None
    refused: str | None = None  # why it is not genuine; None: verified
    stored: datetime | None = None  # when NMC_EVENTS stored it (query only)
    seq: int | None = None  # its sequence in NMC_EVENTS (query only): where a reader that follows the stream goes on

    @property
    def verified(self) -> bool:
        """Whether the event passed every check of nmc.security.events."""
        return self.refused is None


def _check(verifier: EventVerifier, subject: str, body: bytes, headers: Any, now: float | None) -> SeenEvent:
    try:
        return SeenEvent(subject, verifier.check(subject, body, headers, now=now))
    except EventRefused as exc:
        return SeenEvent(subject, exc.event, exc.reason)


async def watch_events(nc: NATS, verifier: EventVerifier, *, collective: str | None = None,
                       kinds: Iterable[str] = (), unverified: bool = False,
                       on_refused: Callable[[SeenEvent], None] | None = None,
                       on_ready: Callable[[str], None] | None = None) -> AsyncIterator[SeenEvent]:
    """Yield events as they are published, until cancelled.

    `kinds`: only these (empty: all). A refused event is passed to `on_refused` and yielded only
    with `unverified` (marked). `on_ready(subject)` is called once the subscription is in place.
    """
    wanted = frozenset(kinds)
    queue: asyncio.Queue[SeenEvent] = asyncio.Queue(maxsize=_QUEUE)
    dropped = 0

    async def on_msg(msg: Any) -> None:
        nonlocal dropped
        seen = _check(verifier, msg.subject, msg.data, msg.headers, None)
        if wanted and (seen.event is None or seen.event.kind not in wanted):
            return
        try:
            queue.put_nowait(seen)
        except asyncio.QueueFull:
            dropped += 1
            if dropped == 1 or dropped % 1000 == 0:
                log.warning("events_dropped", dropped=dropped, hint="the terminal cannot keep up")

    subject = event_query_subject(collective, next(iter(wanted)), None) if len(wanted) == 1 \
        else event_subjects(collective)
    sub = await nc.subscribe(subject, cb=on_msg)
    try:
        await nc.flush(timeout=5)
        if on_ready is not None:
            on_ready(subject)
        while True:
            seen = await queue.get()
            if _shown(seen, unverified, on_refused):
                yield seen
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def query_events(nc: NATS, verifier: EventVerifier, *, collective: str | None = None,
                       kind: str | None = None, identity: str | None = None, since: datetime | None = None,
                       until: datetime | None = None, unverified: bool = False,
                       on_refused: Callable[[SeenEvent], None] | None = None,
                       stream: str = EVENTS_STREAM, timeout: float = 5.0,
                       after: int | None = None) -> AsyncIterator[SeenEvent]:
    """Yield the events stored in NMC_EVENTS (stored at or after `since`, until `until`), oldest first.

    `after`: only those stored after that stream sequence (a reader following the stream, such as
    the console's live Events page, asks again from the last `seq` it saw).
    Raises EventStreamError when the stream cannot be read. Refused events as in `watch_events`.
    """
    js = nc.jetstream(timeout=timeout)
    subject = event_query_subject(collective, kind, identity)
    try:
        info = await js.stream_info(stream)
    except NotFoundError as exc:
        raise EventStreamError(f"stream {stream} does not exist (the operator creates it: `nmc ops setup`)") from exc
    except Exception as exc:  # noqa: BLE001 - timeouts, no JetStream, no permission
        raise EventStreamError(f"cannot read stream {stream}: {reason_of(exc) or type(exc).__name__}") from exc
    first, last = max(1, info.state.first_seq), info.state.last_seq
    if not info.state.messages:
        return
    seq = first if since is None else await _first_at(js, stream, since, first, last)
    if after is not None and seq is not None:
        seq = max(seq, after + 1)
    while seq is not None and seq <= last:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError as exc:
            if exc.err_code == _NO_MESSAGE:
                return
            raise EventStreamError(f"cannot read stream {stream}: {exc.description or exc}") from exc
        except (APIError, nats.errors.Error) as exc:
            raise EventStreamError(f"cannot read stream {stream}: {reason_of(exc) or type(exc).__name__}") from exc
        if msg.seq is None or msg.seq > last:
            return
        seq = msg.seq + 1
        if until is not None and msg.time is not None and msg.time > until:
            return
        stored = msg.time
        seen = _check(verifier, msg.subject or "", msg.data or b"", msg.headers,
                      stored.timestamp() if stored is not None else None)
        seen = SeenEvent(seen.subject, seen.event, seen.refused, stored, msg.seq)
        if _shown(seen, unverified, on_refused):
            yield seen


def _shown(seen: SeenEvent, unverified: bool, on_refused: Callable[[SeenEvent], None] | None) -> bool:
    """Whether to yield `seen`: a verified event always; a refused one is told to `on_refused`, and shown only
    when `unverified` asks for it (marked, never as genuine)."""
    if seen.verified:
        return True
    if on_refused is not None:
        on_refused(seen)
    return unverified


async def _first_at(js: Any, stream: str, when: datetime, low: int, high: int) -> int | None:
    """The first sequence stored at or after `when` (binary search over the stream's message times)."""
    found: int | None = None
    while low <= high:
        middle = (low + high) // 2
        try:
            msg = await js.get_msg(stream, seq=middle, subject=">", next=True)
        except NotFoundError:
            msg = None
        except (APIError, nats.errors.Error) as exc:
            raise EventStreamError(f"cannot read stream {stream}: {reason_of(exc) or type(exc).__name__}") from exc
        if msg is None or msg.seq is None or msg.seq > high:
            high = middle - 1
        elif msg.time is not None and msg.time >= when:
            found, high = msg.seq, middle - 1
        else:
            low = msg.seq + 1
    return found


REREAD = 10.0  # seconds between registry reads for identities FactView does not know


@dataclass
class _Known:
    facts: dict[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()


class FactView:
    """What each identity's facts are, as far as this reader knows: for `-F` on events (see the module doc)."""

    def __init__(self, nc: NATS | None, collective: str, *, bucket: str = DEFAULT_BUCKET) -> None:
        self.nc, self.collective, self.bucket = nc, collective, bucket
        self.known: dict[str, _Known] = {}
        self._read_at: float | None = None
        self._warned = False

    async def load(self) -> None:
        """Read the registry (a failure is logged once; events' own facts still count)."""
        if self.nc is None:
            return
        from nmc.client.registry import RegistryError, read_registry

        self._read_at = time.monotonic()
        try:
            snapshot = await read_registry(self.nc, self.collective, bucket=self.bucket, timeout=5.0, list_timeout=2.0)
        except (RegistryError, nats.errors.Error, asyncio.TimeoutError) as exc:
            if not self._warned:
                self._warned = True
                log.warning("events_registry_unreadable", reason=reason_of(exc) or type(exc).__name__,
                            hint="filters see only the facts that startup and facts_changed events carry")
            return
        for entry in snapshot.entries:
            self.known.setdefault(entry.identity, _Known(dict(entry.facts), tuple(entry.classes), tuple(entry.agents)))

    def learn(self, event: CloudEvent) -> None:
        """Take the facts an event carries (startup: all of them; facts_changed: the changed ones)."""
        data = event.data
        if event.kind == "startup":
            self.known[event.identity] = _Known(dict(data.get("facts") or {}), tuple(data.get("classes") or ()),
                                                tuple(data.get("agents") or ()))
        elif event.kind == "facts_changed":
            known = self.known.setdefault(event.identity, _Known())
            values = data.get("facts") or {}
            for name in data.get("changed") or ():
                if name in values:
                    known.facts[name] = values[name]
                else:
                    known.facts.pop(name, None)

    async def matches(self, tree: FilterTree, event: CloudEvent) -> bool:
        """Whether the event's identity matches `tree` by what is known of it (after learning from the event)."""
        self.learn(event)
        if event.identity not in self.known and (self._read_at is None or time.monotonic() - self._read_at > REREAD):
            await self.load()
        known = self.known.get(event.identity, _Known())
        return matches(tree, known.facts, known.classes, event.identity, known.agents)
