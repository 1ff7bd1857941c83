"""The audit service (`nmc serve audit`): NMC_AUDIT -> JSON-lines file (rotated) and, optionally, syslog.

It reads the stream without any JetStream consumer. nats-server checks neither
a push consumer's deliver subject nor the reply subject of a pull request
against the permissions of whoever asks, so a role that may create or fetch
from a consumer can have stored records delivered onto any subject; no role,
the audit role included, may (docs/security.md, nmc.security.permissions).
Instead the service reads stored records by sequence with `STREAM.MSG.GET`,
as `nmc audit tail` does (nmc.audit.reader.StoredMessages: several requests
at once while it is behind), and keeps its own position: the next stream
sequence to read, in a small file (nmc.audit.position; by default
`<audit.file>.position`).

For each batch it drops records it already wrote (a bounded set of recent
ids, read back from the file at start: see nmc.audit.dedup), sends the rest
to syslog, appends them to the file (flushed and fsync'd) and only then saves
the position after the batch (fsync'd, renamed over the old one): at once when
no more records wait, at most once a second while they keep coming, and on stop.
A crash before the save means those records are read again after the restart,
and they are recognised as written. A hint waits a moment (`_COALESCE`) for the
rest of its burst, so one read and one fsync cover many records. A restart resumes at the saved position;
with no position file it starts at the stream's first record (a corrupt one
is reported and treated the same; one that cannot be read at all stops the
start with one line). Records that aged out of the stream (its max age)
before the service read them are counted (`lost`) and reported with how many
(`audit_records_lost`); a stream made again (another creation time, or fewer
records than the position) is read from its first record.

It subscribes to `nmc.audit.>` (core NATS) only as a hint: a record published
there wakes it to read on from its position at once; without hints it looks
every `idle` seconds. Nothing that arrives on that subscription is written:
only what the stream holds, read back by sequence. It also registers the
ADR-32 service `nmc-audit`, so `nats micro ls` and the `$SRV` verbs find it.

The stream is the operator's (`nmc audit setup`): the service looks it up
and never changes it (it creates it only where the broker lets it, with no
permissions).

Only genuine records are written: signed by a node's certificate whose name
is the record's identity and its subject's (nmc.audit.verify). Anything else
is counted (`bad`: not a record, `refused`: not genuine), logged with its
reason and stream sequence, read past and left in the stream (`nmc audit
query --unverified` shows it, marked).

Lifecycle events (docs/events.md), with a signer (the service's own
certificate, role `audit`): `audit_backlog` when the records stored but not
yet written (the stream's last sequence - the position) reach
`audit.backlog_warn`, again at most every `backlog_every` seconds while they
stay there, and once when they are back under. With `audit.events = true` it
also subscribes `nmc.events.>` (core NATS, best-effort) and writes every event
that verifies (nmc.security.events) to the same file and syslog, marked
`"kind": "event"` (nmc.audit.formats.event_entry); one that does not verify
is counted (`events_refused`) and logged, never written.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js.api import StreamInfo
from nats.js.client import JetStreamContext

from nmc import __version__
from nmc.audit.dedup import RecentIds
from nmc.audit.errors import AuditRecordError, AuditRecordRefused, AuditStreamError, PositionError, SinkError
from nmc.audit.formats import FILE_FORMATS, SYSLOG_FACILITIES
from nmc.audit.position import Position, PositionCorrupt, PositionFile, default_position_file
from nmc.audit.reader import StoredMessage, StoredMessages
from nmc.audit.sinks import FileSink, SyslogSink, SyslogTarget
from nmc.audit.stream import DEFAULT_MAX_AGE, STREAM, STREAM_SUBJECTS, ensure_stream
from nmc.audit.verify import RecordVerifier
from nmc.audit.formats import event_entry
from nmc.protocol.audit import record_msg_id
from nmc.protocol.events import CloudEvent
from nmc.protocol.subjects import event_subjects
from nmc.security import Signer
from nmc.security.events import EventRefused, EventVerifier
from nmc.transport.events import publish_event
from nmc.transport.micro import MicroService
from nmc.transport import connect, daemon_options

__all__ = ["SERVICE_NAME", "AuditService", "AuditServiceSettings"]

SERVICE_NAME = "nmc-audit"
log = structlog.get_logger("nmc.audit")
_BACKOFF_MIN, _BACKOFF_MAX = 0.2, 5.0
_CHECK_EVERY = 5.0  # seconds between looks at the stream itself (made again? records aged out?)
_COALESCE = 0.02  # seconds a hint waits for the rest of its burst before the read
_SAVE_EVERY = 1.0  # seconds between position saves while records keep coming (re-read copies are dropped)
_HINT_RETRY = 0.05  # a hint came before the stream had stored its record: look again this soon
_SETUP_HINT = "the operator creates it: `nmc audit setup` with a certificate of role operator"


@dataclass(frozen=True)
class AuditServiceSettings:
    """Everything the audit service needs: brokers, the file and its position file, syslog."""

    file: Path
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    format: str = "json"  # json | mcollective
    rotate_bytes: int = 100 << 20
    keep: int = 10
    syslog: SyslogTarget | None = None
    syslog_facility: str = "local0"
    position_file: Path | None = None  # where the next stream sequence to read is kept; None: <file>.position
    max_age: float = DEFAULT_MAX_AGE
    replicas: int = 1  # JetStream servers keeping NMC_AUDIT (plugin.nats.jetstream_replicas)
    dedup_ids: int = 100_000
    batch: int = 256  # most records written (and one position saved) at a time
    tls: Any = None
    reconnect_wait: float = 0.5
    idle: float = 1.0  # seconds between looks for new records when no hint came
    collective: str = "nmc"  # the collective of the service's own events (main_collective)
    backlog_warn: int = 1000  # records waiting to be written that make an audit_backlog event; 0: never
    backlog_every: float = 60.0  # seconds between audit_backlog events while the backlog stays
    events: bool = False  # also write every verified lifecycle event to the file and syslog (audit.events)

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("at least one NATS server URL is needed")
        for name in ("dedup_ids", "batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"audit {name} must be positive, got {getattr(self, name)}")
        if not (math.isfinite(self.idle) and self.idle > 0):
            raise ValueError(f"audit idle must be a positive number of seconds, got {self.idle!r}")
        if self.format not in FILE_FORMATS:
            raise ValueError(f"audit.format must be one of {', '.join(FILE_FORMATS)}, got {self.format!r}")
        if self.syslog_facility not in SYSLOG_FACILITIES:
            raise ValueError(f"audit.syslog_facility must be one of {', '.join(SYSLOG_FACILITIES)}, "
                             f"got {self.syslog_facility!r}")
        if self.rotate_bytes <= 0 or self.keep < 0:
            raise ValueError("audit.rotate_bytes must be positive and audit.keep 0 or more")
        position, file = Path(self.position_path), Path(self.file)
        rotated = position.parent == file.parent and position.name.startswith(file.name + ".") and \
            position.name[len(file.name) + 1:].isdigit()
        if position == file or rotated:
            raise ValueError(f"audit.position_file must be a file of its own, not the audit file or one of its "
                             f"rotated copies: {position}")

    @property
    def position_path(self) -> Path:
        """The position file: `position_file`, else `<file>.position` beside the audit file."""
        return self.position_file if self.position_file is not None else default_position_file(Path(self.file))


@dataclass
class ServiceCounters:
    """What the service did since it started."""

    written: int = 0
    duplicates: int = 0
    bad: int = 0  # not an audit record at all
    refused: int = 0  # a record, but not a genuine one of the node it names (never written)
    lost: int = 0  # stream messages gone (aged out) before the service could read them
    batches: int = 0
    sink_errors: int = 0  # failed writes to the file or syslog, failed saves of the position
    hints: int = 0  # messages heard on nmc.audit.> (wake-ups only: never written)
    events_written: int = 0  # verified lifecycle events written (audit.events)
    events_refused: int = 0  # events heard that did not verify: counted and logged, never written
    backlog_events: int = 0  # audit_backlog events published


class AuditService:
    """Reads NMC_AUDIT by sequence and writes every record once to the file (and to syslog)."""

    def __init__(self, settings: AuditServiceSettings, verifier: RecordVerifier, *, signer: Signer | None = None,
                 event_verifier: EventVerifier | None = None) -> None:
        """`signer`: the service's own certificate, for its events (None: it publishes none).
        `event_verifier`: checks the events it writes when `settings.events` (required then)."""
        if settings.events and event_verifier is None:
            raise ValueError("audit.events = true needs an event verifier")
        self.settings = settings
        self.verifier = verifier
        self.signer = signer
        self.event_verifier = event_verifier
        self._events_sub: Any = None
        self._sink_lock = asyncio.Lock()  # records and events are written one batch at a time
        self._backlog_at: float | None = None  # when the last audit_backlog (above) went out; None: not above
        self.file = FileSink(settings.file, format=settings.format, rotate_bytes=settings.rotate_bytes,
                             keep=settings.keep)
        self.syslog = (SyslogSink(settings.syslog, facility=settings.syslog_facility)
                       if settings.syslog is not None else None)
        self.positions = PositionFile(settings.position_path)
        self.counters = ServiceCounters()
        self.recent: RecentIds | None = None
        self.nc: NATS | None = None
        self.micro: MicroService | None = None
        self._js: JetStreamContext | None = None
        self._hint_sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._saved: Position | None = None  # what the position file holds
        self._saved_at = 0.0  # when it was last saved (monotonic)
        self._attempted_at = 0.0  # when a save was last tried
        self._save_failed = False  # the last try failed: the next waits a second
        self._next_seq: int | None = None  # the next stream sequence to handle: every one before it is done
        self._stream_created: str | None = None  # when the stream `_next_seq` counts in was made
        self._stored: StoredMessages | None = None  # the reader at the position; None: look the stream up first
        self._checked = 0.0  # when the stream was last looked up (monotonic)
        self._stream_warned = False
        self._hint = asyncio.Event()
        self._hints = 0  # hints since the last read: how many records to ask for at once past the known end
        self._stopping = asyncio.Event()
        self._log = log.bind(file=str(settings.file))

    @property
    def position(self) -> int | None:
        """The next stream sequence to read; every message before it is handled (None: not known yet)."""
        return self._next_seq

    async def start(self, *, give_up_after: float | None = None) -> None:
        """Read back recent ids and the position, connect, listen for hints, register `nmc-audit`, start reading.

        Raises SinkError (the file), PositionError (a position file that cannot be read) and nats errors.
        The first connection is retried until `give_up_after` seconds (forever when None), then ConnectError.
        """
        self.recent = await self.file.open(self.settings.dedup_ids)
        self._saved = await self._load_position()
        opts = daemon_options(SERVICE_NAME, self.settings.servers, self.settings.tls, self.settings.reconnect_wait)
        self.nc = await connect(opts, give_up_after=give_up_after, on_retry=self._on_connect_failed,
                                error_cb=self._on_error, disconnected_cb=self._on_disconnect,
                                reconnected_cb=self._on_reconnect)
        self._js = self.nc.jetstream()
        self._hint_sub = await self.nc.subscribe(STREAM_SUBJECTS[0], cb=self._on_hint)
        if self.settings.events:
            self._events_sub = await self.nc.subscribe(event_subjects(), cb=self._on_event)
        metadata = {"stream": STREAM, "position_file": str(self.positions.path), "file": str(self.settings.file),
                    "format": self.settings.format, "syslog": str(self.settings.syslog or "")}
        self.micro = MicroService(self.nc, name=SERVICE_NAME, version=__version__,
                                  description="nmc audit service: NMC_AUDIT to a JSON-lines file and syslog",
                                  metadata=metadata)
        await self.micro.start()
        self._task = asyncio.create_task(self._run(), name="nmc-audit-read")
        self._log.info("audit_service_started", servers=list(self.settings.servers), remembered=len(self.recent),
                       position_file=str(self.positions.path),
                       saved_position=self._saved.next_seq if self._saved is not None else None,
                       syslog=str(self.settings.syslog or ""), format=self.settings.format, service_id=self.micro.id)

    async def stop(self) -> None:
        """Finish the batch in hand (written and its position saved), then disconnect."""
        self._stopping.set()
        self._hint.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._save(force=True)  # what was written, up to the last batch
        if self.micro is not None:
            await self.micro.stop(grace=1.0)
        if self.syslog is not None:
            await self.syslog.close()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.close()
        self._log.info("audit_service_stopped", written=self.counters.written, duplicates=self.counters.duplicates,
                       refused=self.counters.refused, lost=self.counters.lost, position=self._next_seq)

    async def _load_position(self) -> Position | None:
        """The saved position; None (reported) for none or a corrupt one; PositionError when it cannot be read."""
        assert self.recent is not None
        try:
            saved = await asyncio.to_thread(self.positions.load)
        except PositionCorrupt as exc:
            self._log.warning("audit_position_corrupt", error=exc.reason, position_file=str(self.positions.path),
                              action="reading NMC_AUDIT from its first record; records already in the file are "
                                     "dropped as duplicates, and the file is replaced after the first batch")
            return None
        if saved is None and len(self.recent):
            self._log.warning("audit_position_missing", position_file=str(self.positions.path),
                              action="reading NMC_AUDIT from its first record; of the records already in the file, "
                                     f"the last {self.settings.dedup_ids} (audit.dedup_ids) are recognised")
        return saved

    async def _on_hint(self, msg: Any) -> None:
        """A record was published on nmc.audit.>: read on. Its content is not looked at (the stream's copy is)."""
        self.counters.hints += 1
        self._hints += 1
        self._hint.set()

    async def _pause(self, seconds: float) -> bool:
        """Wait `seconds` or until stop() is called; True if stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()

    async def _wait_for_hint(self, seconds: float) -> bool:
        """Wait `seconds` or until a hint comes (or stop() is called); True if one came."""
        try:
            await asyncio.wait_for(self._hint.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return False
        return True

    async def _find_stream(self) -> StreamInfo:
        """The stream as the operator made it; created only where the broker lets any client (no permissions)."""
        assert self._js is not None
        try:
            info = await ensure_stream(self._js, self.settings.max_age, update=False, replicas=self.settings.replicas)
        except AuditStreamError as exc:
            raise AuditStreamError(f"{exc.reason} ({_SETUP_HINT})") from exc
        self._checked = time.monotonic()
        have = (info.config.max_age or 0, info.config.num_replicas or 1)
        if have != (self.settings.max_age, self.settings.replicas) and not self._stream_warned:
            self._stream_warned = True
            self._log.warning("audit_stream_settings_differ", stream_max_age=have[0], stream_replicas=have[1],
                              max_age=self.settings.max_age, replicas=self.settings.replicas,
                              hint="the stream keeps its settings; `nmc audit setup --max-age ...` changes them")
        return info

    async def _open_stream(self) -> None:
        """Look the stream up and place the reader at the position (this run's, else the saved one, else the first)."""
        assert self._js is not None
        info = await self._find_stream()
        created, first, last = _created(info), max(info.state.first_seq, 1), info.state.last_seq
        if self._next_seq is not None:  # read before in this run: a read failed or the broker was away
            start, known = self._next_seq, self._stream_created
        elif self._saved is not None:
            start, known = self._saved.next_seq, self._saved.stream_created
        else:
            start, known = first, created
        start = self._reconcile(start, known, created, first, last)
        self._stream_created, self._next_seq = created, start
        self._stored = StoredMessages(self._js, STREAM_SUBJECTS[0], start, None, last)
        if self._saved is not None:
            await self._save()  # the stream moved on (or was made again): say so before the next record

    async def _check_stream(self) -> None:
        """Between batches: the stream made again, records aged out past the position, its end as known now."""
        assert self._stored is not None
        info = await self._find_stream()
        created, first, last = _created(info), max(info.state.first_seq, 1), info.state.last_seq
        reading = self._stored.next_seq
        start = self._reconcile(reading, self._stream_created, created, first, last)
        self._stream_created = created
        if start != reading:
            assert self._js is not None
            self._next_seq = start
            self._stored = StoredMessages(self._js, STREAM_SUBJECTS[0], start, None, last)
            await self._save()
        else:
            self._stored.last_seq = max(self._stored.last_seq, last)

    def _reconcile(self, start: int, known_created: str | None, created: str | None, first: int, last: int) -> int:
        """Where to read from in the stream as it is now, given a position `start` in the stream made at `known_created`."""
        if known_created is not None and created is not None and known_created != created:
            self._log.warning("audit_stream_replaced", position=start, position_stream_created=known_created,
                              stream_created=created, first_stream_seq=first,
                              action="reading the new stream from its first record")
            return first
        if start > last + 1:
            self._log.warning("audit_stream_replaced", position=start, last_stream_seq=last, first_stream_seq=first,
                              reason=f"the stream ends at sequence {last}, before the position",
                              action="reading it from its first record")
            return first
        if start < first:
            self._lost(start, first - 1)
            return first
        return start

    def _lost(self, first_lost: int, last_lost: int) -> None:
        count = last_lost - first_lost + 1
        self.counters.lost += count
        self._log.warning("audit_records_lost", count=count, first_stream_seq=first_lost, last_stream_seq=last_lost,
                          reason="no longer in the stream when the service came to read them (older than its max "
                                 "age: the service was stopped or behind for longer)")

    async def _run(self) -> None:
        delay = _BACKOFF_MIN
        hinted = False
        while not self._stopping.is_set():
            try:
                if self._stored is None:
                    await self._open_stream()
                elif time.monotonic() - self._checked >= _CHECK_EVERY:
                    await self._check_stream()
                self._hint.clear()  # a hint from now on means: read again
                expect, self._hints = self._hints, 0
                msgs = await self._until_stopped(self._read(expect))
            except AuditStreamError as exc:
                self._stored = None
                self._log.warning("audit_stream_unavailable", error=exc.reason, retry_in=delay)
                if await self._pause(delay):
                    return
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            except nats.errors.Error as exc:
                # No answer (the broker is away), a closed connection: look the stream up again first.
                self._stored = None
                self._log.warning("audit_read_failed", error=f"{type(exc).__name__}: {exc}".rstrip(": "),
                                  retry_in=delay)
                if await self._pause(delay):
                    return
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            if msgs is None:
                return  # stopping while reading: nothing of it handled, the position stays
            delay = _BACKOFF_MIN
            assert self._stored is not None
            if msgs or self._stored.next_seq != self._next_seq:
                await self._handle(msgs, self._stored.next_seq)
            await self._check_backlog()
            if msgs:
                hinted = False
                continue
            # Nothing new: the position of what was written is saved now, not a batch later.
            await self._save()
            # A hint may have come before the stream stored its record: look again soon.
            hinted = await self._wait_for_hint(_HINT_RETRY if hinted else self.settings.idle)
            if hinted and not self._stopping.is_set():
                # Records come in bursts (a decision and a result per node and request): let the burst
                # land, so one read, one fsync of the file and one saved position cover it.
                await asyncio.sleep(_COALESCE)

    async def _until_stopped(self, step: Any) -> Any:
        """`step`'s result, or None when stop() is called first (then `step` is cancelled)."""
        work = asyncio.ensure_future(step)
        stopping = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            return None
        stopping.cancel()
        return work.result()

    async def _read(self, expect: int) -> list[StoredMessage]:
        """Up to `batch` stored messages from the position on ([]: none yet); gaps are reported as lost."""
        stored = self._stored
        assert stored is not None
        msgs: list[StoredMessage] = []
        while len(msgs) < self.settings.batch:
            before = stored.next_seq
            got = await stored.read(self.settings.batch - len(msgs), expect=expect)
            expect = max(0, expect - len(got))
            expected = before
            for msg in got:  # the service reads every subject of the stream: a sequence skipped is a record gone
                seq = msg.metadata.sequence.stream
                if seq > expected:
                    self._lost(expected, seq - 1)
                expected = seq + 1
            if stored.next_seq > expected:
                self._lost(expected, stored.next_seq - 1)
            msgs += got
            if not got or (stored.next_seq > stored.last_seq and not expect):
                break  # nothing more known: the next hint (or look) reads on
        return msgs

    async def _handle(self, msgs: list[StoredMessage], upto: int) -> None:
        """Write the new records of one batch to every sink, then save the position `upto` (after the batch)."""
        assert self.recent is not None
        fresh: list[dict[str, Any]] = []
        ids: list[str] = []
        batch_ids: set[str] = set()
        duplicates = 0
        for msg in msgs:
            try:
                record = self.verifier.check(msg.subject, msg.data, msg.headers, now=_stored_at(msg))
            except AuditRecordRefused as exc:
                # Forged, unsigned or about another node: never written as genuine; it stays in the stream.
                self.counters.refused += 1
                self._log.error("audit_record_refused", error=exc.reason, subject=msg.subject,
                                stream_seq=_stream_seq(msg))
                continue
            except AuditRecordError as exc:
                # Not ours to fix: keep it out of the file, say where it is in the stream.
                self.counters.bad += 1
                self._log.error("audit_bad_record", error=exc.reason, subject=msg.subject,
                                stream_seq=_stream_seq(msg))
                continue
            msg_id = record_msg_id(record)
            if msg_id in self.recent or msg_id in batch_ids:
                duplicates += 1
                continue
            batch_ids.add(msg_id)
            fresh.append(record)
            ids.append(msg_id)
        if fresh and not await self._write(fresh):
            return  # stopping with the batch unwritten: the position stays before it, so it is read again
        for msg_id in ids:
            self.recent.add(msg_id)
        self.counters.written += len(fresh)
        if msgs:
            self.counters.batches += 1
        if duplicates:
            self.counters.duplicates += duplicates
            self._log.info("audit_duplicates_dropped", count=duplicates)
        self._next_seq = upto
        if time.monotonic() - self._saved_at >= _SAVE_EVERY:
            await self._save()  # while records keep coming; the idle loop saves the rest at once
        if msgs:
            self._log.debug("audit_batch_written", records=len(fresh), position=upto)

    async def _save(self, *, force: bool = False) -> None:
        """Save the position (after what is written); a failure is reported and tried again a second later."""
        if self._next_seq is None:
            return
        position = Position(self._next_seq, self._stream_created)
        if position == self._saved:
            return
        now = time.monotonic()
        if self._save_failed and now - self._attempted_at < _SAVE_EVERY and not force:
            return  # a failing save is tried again once a second, not on every idle look
        self._attempted_at = now
        try:
            await asyncio.to_thread(self.positions.save, position)
        except PositionError as exc:
            self._save_failed = True
            self.counters.sink_errors += 1
            self._log.error("audit_position_not_saved", error=exc.reason, position_file=str(self.positions.path),
                            position=position.next_seq,
                            hint="the records are written; a restart before the next save reads them again and "
                                 "drops them as duplicates")
            return
        self._saved, self._saved_at, self._save_failed = position, time.monotonic(), False

    @property
    def backlog(self) -> int | None:
        """Records stored in the stream and not yet written, as far as the service knows (None: not known yet)."""
        if self._stored is None or self._next_seq is None:
            return None
        return max(0, max(self._stored.last_seq, self._next_seq - 1) - self._next_seq + 1)

    async def _check_backlog(self) -> None:
        """audit_backlog when the backlog reaches the threshold, at most every backlog_every s, and once back under."""
        threshold, pending = self.settings.backlog_warn, self.backlog
        if threshold <= 0 or pending is None:
            return
        now = time.monotonic()
        if pending >= threshold:
            if self._backlog_at is not None and now - self._backlog_at < self.settings.backlog_every:
                return
            self._backlog_at = now
            self._log.warning("audit_backlog", pending=pending, threshold=threshold, position=self._next_seq)
        elif self._backlog_at is not None:
            self._backlog_at = None
            self._log.info("audit_backlog_cleared", pending=pending, threshold=threshold, position=self._next_seq)
        else:
            return
        if self.signer is None:
            return
        event = CloudEvent(kind="audit_backlog", collective=self.settings.collective, identity=self.signer.name,
                           time=time.time(), data={"pending": pending, "threshold": threshold,
                                                   "above": pending >= threshold, "position": self._next_seq})
        if await publish_event(self.nc, self.signer, event):
            self.counters.backlog_events += 1

    async def _on_event(self, msg: Any) -> None:
        """A lifecycle event heard on nmc.events.>: written when it verifies, counted and logged when not."""
        assert self.event_verifier is not None
        try:
            event = self.event_verifier.check(msg.subject, msg.data, msg.headers)
        except EventRefused as exc:
            self.counters.events_refused += 1
            self._log.warning("audit_event_refused", error=exc.reason, subject=msg.subject[:200])
            return
        if await self._write([event_entry(event.to_dict())]):
            self.counters.events_written += 1

    async def _write(self, records: list[dict[str, Any]]) -> bool:
        """Syslog first, then the file (the file is what duplicates are recognised by); retry until it works."""
        async with self._sink_lock:
            return await self._write_unlocked(records)

    async def _write_unlocked(self, records: list[dict[str, Any]]) -> bool:
        delay = _BACKOFF_MIN
        syslog_done = self.syslog is None
        while True:
            try:
                if not syslog_done:
                    assert self.syslog is not None
                    await self.syslog.write(records)
                    syslog_done = True
                await self.file.write(records)
                return True
            except SinkError as exc:
                self.counters.sink_errors += 1
                self._log.error("audit_sink_failed", sink=exc.sink, error=exc.reason, records=len(records),
                                retry_in=delay)
                if await self._pause(delay):
                    return False
                delay = min(delay * 2, _BACKOFF_MAX)

    def _on_connect_failed(self, reason: str, attempts: int) -> None:
        self._log.warning("nats_connect_failed", reason=reason, attempts=attempts, servers=list(self.settings.servers))

    async def _on_error(self, exc: Exception) -> None:
        self._log.warning("nats_error", error=str(exc) or type(exc).__name__)

    async def _on_disconnect(self) -> None:
        if not self._stopping.is_set():
            self._log.warning("nats_disconnected")

    async def _on_reconnect(self) -> None:
        self._log.info("nats_reconnected")


def _created(info: StreamInfo) -> str | None:
    """When the broker made the stream, as the position file keeps it (None: the server did not say)."""
    return info.created.isoformat() if info.created is not None else None


def _stored_at(msg: Any) -> float | None:
    """When the broker stored the message: the certificate must have been valid then, not still be now."""
    try:
        return float(msg.metadata.timestamp.timestamp())
    except Exception:  # noqa: BLE001 - no metadata: check against the present
        return None


def _stream_seq(msg: Any) -> int | None:
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:  # noqa: BLE001 - metadata is only for the log line
        return None
