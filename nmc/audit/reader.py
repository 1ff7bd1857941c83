"""Reading NMC_AUDIT directly, for `nmc audit tail` and `nmc audit query` (no audit service needed).

The reader makes no consumer: it fetches one stored message at a time with
`STREAM.MSG.GET` (the next one on the query's subject from a sequence, or
from a time for `--since`), many at once while it is behind. nats-server
checks neither a consumer's deliver subject nor a pull request's reply
subject against the reader's permissions, so letting users create consumers
let them have records delivered onto any subject (nmc.security.permissions,
rule 2); a `STREAM.MSG.GET` answer is the server's JSON, the record inside.
Nothing lives on the server between two reads, so `tail -f` rides out a
broker restart by asking again after the last record it saw. Copies of a
record (a node's resend that got past the stream's de-duplication window)
are shown once. The audit service reads the stream with the same
`StoredMessages`, keeping its own position (nmc.audit.service).

Records are checked as the audit service checks them (nmc.audit.verify):
one that is not a genuine record of the node it names (unsigned, forged,
signed by a revoked certificate) is not shown; `on_refused` hears about it.
With `unverified` it is shown after all, marked with `"verified": false` and
the reason in `"refused"`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import nats.errors
from nats.js.api import RawStreamMsg
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from nmc.audit.dedup import RecentIds
from nmc.audit.errors import AuditRecordError, AuditRecordRefused, AuditStreamError
from nmc.audit.formats import parse_time
from nmc.audit.stream import STREAM
from nmc.audit.verify import RecordVerifier
from nmc.protocol.audit import record_msg_id
from nmc.protocol.subjects import audit_query_subject

__all__ = ["NO_MESSAGE", "AuditQuery", "StoredMessage", "StoredMessages", "read_records"]

# Records are stamped by the node, stored by the broker: allow their clocks to differ this much.
CLOCK_SKEW = timedelta(minutes=5)
_FETCH = 500
_IN_FLIGHT = 64  # STREAM.MSG.GET requests at once while behind
_POLL = 0.25  # seconds between looks for new records at the end of the stream (tail -f)
NO_MESSAGE = 10037  # nats-server's error code: no message at or after the sequence (or time)


@dataclass(frozen=True)
class AuditQuery:
    """Which records to show; every field given must match (None: any). Pure."""

    caller: str | None = None
    agent: str | None = None
    action: str | None = None
    identity: str | None = None
    collective: str | None = None
    phase: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def subject(self) -> str:
        """The narrowest stream subject that holds every matching record."""
        return audit_query_subject(self.collective, self.identity)

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether a decoded record fits the query."""
        for name in ("caller", "agent", "action", "identity", "collective", "phase"):
            wanted = getattr(self, name)
            if wanted is not None and record.get(name) != wanted:
                return False
        if self.since is not None or self.until is not None:
            try:
                stamp = parse_time(str(record.get("time")))
            except ValueError:
                return False
            if self.since is not None and stamp < self.since:
                return False
            if self.until is not None and stamp > self.until:
                return False
        return True


async def read_records(js: JetStreamContext, query: AuditQuery = AuditQuery(), *, verifier: RecordVerifier,
                       last: int | None = None, follow: bool = False, idle: float = 1.0, unverified: bool = False,
                       on_refused: Callable[[str, int], None] | None = None) -> AsyncIterator[dict[str, Any]]:
    """Yield matching genuine records in stream order; end at the end of the stream unless `follow`.

    `last` N starts N messages before the end (of the whole stream; use it
    without subject filters). A record `verifier` refuses is skipped, or with
    `unverified` yielded marked (see the module doc); `on_refused(reason,
    stream sequence)` is called for each either way. Raises AuditStreamError
    when the stream cannot be read (no JetStream, no stream yet, no permission).
    """
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError as exc:
        raise AuditStreamError(f"stream {STREAM} does not exist yet (the operator creates it: "
                               "`nmc audit setup`)") from exc
    except Exception as exc:  # noqa: BLE001 - timeouts, no JetStream
        raise AuditStreamError(f"cannot read stream {STREAM}: {type(exc).__name__}: {exc}") from exc
    start_seq: int | None = None
    start_time: datetime | None = None
    if last is not None:
        start_seq = max(1, info.state.last_seq - last + 1, info.state.first_seq)
    elif query.since is not None:
        start_time = (query.since - CLOCK_SKEW).astimezone(timezone.utc)
    seen = RecentIds(100_000)
    delay = 0.1
    while True:
        try:
            sub, pending = await _subscribe(js, query.subject(), start_seq, start_time)
        except AuditStreamError:
            if not follow:
                raise
            await asyncio.sleep(delay)  # the broker is away: try again, a little later each time
            delay = min(delay * 2, 2.0)
            continue
        try:
            if pending == 0 and not follow:
                return
            while True:
                try:
                    msgs = await sub.fetch(_FETCH, timeout=idle)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nats-py raises either
                    if not follow:
                        return  # the stream said there was more, but nothing came: it shrank
                    continue  # nothing new yet
                delay = 0.1
                remaining = None
                for msg in msgs:
                    meta = msg.metadata
                    start_seq, start_time = meta.sequence.stream + 1, None
                    remaining = meta.num_pending
                    try:
                        record = verifier.check(msg.subject, msg.data, msg.headers,
                                                now=meta.timestamp.timestamp())
                        msg_id = record_msg_id(record)
                    except AuditRecordRefused as exc:
                        if not query.matches(exc.record):
                            continue  # what it claims is not asked for: nothing to warn about
                        if on_refused is not None:
                            on_refused(exc.reason, meta.sequence.stream)
                        if not unverified:
                            continue
                        record = {**exc.record, "verified": False, "refused": exc.reason}
                        msg_id = f"refused:{meta.sequence.stream}"  # its id means nothing: one line per message
                    except AuditRecordError:
                        continue
                    if msg_id in seen:
                        continue
                    seen.add(msg_id)
                    if query.matches(record):
                        yield record
                if remaining == 0 and not follow:
                    return
        except nats.errors.Error as exc:
            if not follow:
                raise AuditStreamError(f"reading stream {STREAM}: {type(exc).__name__}: {exc}") from exc
            # Following across a broker restart: again, after the last record seen.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class _NoAnswer(nats.errors.Error):
    """A STREAM.MSG.GET went unanswered (the broker is away): unlike "nothing new", worth a retry or an error."""


@dataclass(frozen=True)
class _Sequence:
    stream: int


@dataclass(frozen=True)
class _Metadata:
    sequence: _Sequence
    num_pending: int
    timestamp: datetime


@dataclass(frozen=True)
class StoredMessage:
    """One stored message, shaped like a fetched JetStream message where its readers look.

    `metadata.sequence.stream` is its stream sequence, `metadata.timestamp` when the broker stored it.
    """

    subject: str
    data: bytes
    headers: dict[str, str] | None
    metadata: _Metadata


class StoredMessages:
    """The stored messages on `subject` from a sequence (or time), read with STREAM.MSG.GET: nothing to create or delete.

    Shared by `nmc audit tail/query` (`fetch`, as a pull subscription's) and the audit
    service (`read`, which keeps its own position: nmc.audit.service). Each request
    asks for the first message on `subject` at or after one sequence; `read(n)` sends
    up to `n` of them at once (at most _IN_FLIGHT) for the next sequences. Each answer
    is the first match at or after its sequence, so the distinct answers are every
    match up to the last answer, in order. `next_seq` is the sequence the next read
    starts at; `last_seq` the end of the stream as last known.
    """

    def __init__(self, js: JetStreamContext, subject: str, start_seq: int, start_time: datetime | None,
                 last_seq: int) -> None:
        self.js, self.subject, self.next_seq, self.start_time, self.last_seq = js, subject, start_seq, start_time, last_seq

    async def fetch(self, batch: int, timeout: float) -> list[StoredMessage]:
        """The next messages (up to `batch`); nats TimeoutError when none came within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            behind = self.next_seq <= self.last_seq or self.start_time is not None
            found = await self.read(batch)
            if found:
                return found
            if behind or loop.time() + _POLL > deadline:
                raise nats.errors.TimeoutError  # nothing up to the end; or nothing new for `timeout` seconds
            await asyncio.sleep(_POLL)

    async def read(self, batch: int, *, expect: int = 0) -> list[StoredMessage]:
        """What is stored from `next_seq` on now, up to `batch` messages ([]: nothing yet); moves `next_seq` past it.

        Up to the known end several requests go out at once; past it one looks for what is
        new, or `expect` at once when the caller knows that many were published since
        (a guess: it only decides how many requests go out, never what is skipped).
        When nothing matches at or after `next_seq`, `next_seq` moves to the known end + 1.
        Raises AuditStreamError (the server refused) or a nats error (no answer).
        """
        if self.start_time is not None:
            first = await self._get(None)  # the first match at or after the start time
            self.start_time = None
            if first is None:
                self.next_seq = max(self.next_seq, self.last_seq + 1)  # none yet: only what comes next
                return []
            self.next_seq = first.seq or self.next_seq
        ahead = max(self.last_seq - self.next_seq + 1, expect)
        count = max(1, min(batch, _IN_FLIGHT, ahead))  # past the known end: one look for what is new
        answers = await asyncio.gather(*(self._get(self.next_seq + i) for i in range(count)))
        found: dict[int, RawStreamMsg] = {}
        for answer in answers:
            if answer is None:
                break  # nothing at or after this sequence: nor after the later ones
            found.setdefault(answer.seq or 0, answer)
        if not found:
            # No match at or after next_seq when asked, so none up to the end known then: skip there.
            self.next_seq = max(self.next_seq, self.last_seq + 1)
            return []
        self.next_seq = max(found) + 1
        self.last_seq = max(self.last_seq, self.next_seq - 1)
        return [StoredMessage(subject=m.subject or "", data=m.data or b"", headers=m.headers,
                              metadata=_Metadata(_Sequence(seq), max(0, self.last_seq - seq), m.time or _EPOCH))
                for seq, m in sorted(found.items())]

    async def _get(self, seq: int | None) -> RawStreamMsg | None:
        try:
            if seq is None:
                return await _get_after_time(self.js, self.subject, self.start_time)
            return await self.js.get_msg(STREAM, seq=seq, subject=self.subject, next=True)
        except NotFoundError as exc:
            if exc.err_code == NO_MESSAGE:
                return None
            raise AuditStreamError(f"cannot read stream {STREAM}: {exc.description or exc}") from exc
        except nats.errors.TimeoutError as exc:
            raise _NoAnswer(f"no answer to STREAM.MSG.GET.{STREAM}") from exc
        except APIError as exc:
            raise AuditStreamError(f"cannot read stream {STREAM}: {exc.description or exc}") from exc


_EPOCH = datetime.fromtimestamp(0, timezone.utc)


async def _get_after_time(js: JetStreamContext, subject: str, when: datetime | None) -> RawStreamMsg | None:
    """The first message on `subject` stored at or after `when`: a binary search by sequence over message times."""
    info = await js.stream_info(STREAM)
    low, high = max(1, info.state.first_seq), info.state.last_seq
    first: RawStreamMsg | None = None
    while low <= high:
        middle = (low + high) // 2
        try:
            msg = await js.get_msg(STREAM, seq=middle, subject=">", next=True)
        except NotFoundError:
            msg = None
        if msg is None or msg.seq is None or msg.seq > high:
            high = middle - 1
        elif when is None or (msg.time is not None and msg.time >= when):
            first, high = msg, middle - 1
        else:
            low = msg.seq + 1
    if first is None:
        return None
    return await js.get_msg(STREAM, seq=first.seq, subject=subject, next=True)


async def _subscribe(js: JetStreamContext, subject: str, start_seq: int | None,
                     start_time: datetime | None) -> tuple[StoredMessages, int]:
    """The stored messages on `subject` from a sequence or time, and whether there is anything (1) or not (0)."""
    try:
        info = await js.stream_info(STREAM)
    except nats.errors.Error as exc:
        raise AuditStreamError(f"cannot read stream {STREAM}: {type(exc).__name__}: {exc}") from exc
    first, last = info.state.first_seq, info.state.last_seq
    begin = max(start_seq or first, first, 1)
    pending = 1 if last >= begin and info.state.messages else 0
    return StoredMessages(js, subject, begin, start_time if start_seq is None else None, last), pending
