"""The node's Auditor: records go to JetStream, and to a local spool whenever the stream cannot take them.

`JetStreamAuditor` is both the pipeline's Auditor and a node Companion (it
needs the node's NATS connection, which exists only once the node started):
pass the same instance as `auditor=` and in `companions=`.

A record is published signed with the node's own certificate (the headers
`Nmc-Signature` and `Nmc-Certificate` over the exact body, as requests are:
the audit service writes nothing it cannot verify as this node's), with
`Nats-Msg-Id: <identity>:<request id>:<phase>:<nonce>` (the nonce is made with
the record and kept with it in the spool, so no other node can know the id
first and a resend keeps it).

Acknowledgements are tracked, not waited for (issue 16): `record()` publishes
the record on the node's connection with a reply subject of its own (one
wildcard subscription, `<inbox>.<n>`, takes every acknowledgement) and returns;
the request goes on while the stream stores it. An acknowledgement that
reports an error, a "no responders" status (no stream takes the subject) or no
acknowledgement within `ack_timeout` puts the record in the spool (appended and
fsync'd, in the order the records were published), so a record that was handed
over is kept unless the node dies before its acknowledgement or its spooling:
what a crash can lose is the records published in the last `ack_timeout`
seconds that the stream did not store. Waiting for each acknowledgement cost a
future, a timer and a wake-up per record, and kept the request's reply behind
a round trip to the stream (docs/performance.md). Two kinds of record are
still kept before `record()` returns: a decision record with `audit.required`
(its promise is that nothing runs unless the record is kept), and every record
made after `stop()` began (nothing would be left to track it).

Once a record had to be spooled, and as long as the spool holds anything, new
records go to the spool too. A background task resends the spool, oldest
first, whenever the stream answers again (and right after start, for what an
earlier run left), and removes only what the stream acknowledged. A record
whose acknowledgement did not come may still have been stored (or come
late); its resend carries the same Nats-Msg-Id, so the stream drops the copy
inside its de-duplication window, and the audit service drops any copy that
gets past it. Records published after one that failed may be stored before
the failed one is resent, so the stream holds a node's records in the order
they were stored, not always the order they were made (each carries its time).

`stop()` waits until every record in flight is acknowledged or spooled (at
most `ack_timeout`), so a clean stop loses nothing.

At start (and after a failed resend, at most every few seconds) the node
creates NMC_AUDIT if it does not exist yet, with its own `audit.max_age`;
it never changes an existing stream (the audit service owns its settings).
Without permission to create it, records wait in the spool until someone does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from nmc.audit.errors import AuditStreamError, SpoolError
from nmc.audit.hooks import AuditUnavailable
from nmc.audit.records import encode_record
from nmc.audit.spool import Spool, SpoolEntry
from nmc.audit.stream import DEFAULT_MAX_AGE, STREAM, ensure_stream
from nmc.protocol.audit import AuditRecord, header_msg_id
from nmc.protocol.subjects import audit_subject
from nmc.security import Signer
from nmc.transport.companion import NodeView
from nmc.transport.tasks import cancel_and_wait

__all__ = ["AuditSettings", "JetStreamAuditor"]

log = structlog.get_logger("nmc.audit")

_RESEND_BATCH = 256
_RETRY_MIN, _RETRY_MAX = 0.1, 2.0
_ENSURE_EVERY = 10.0  # seconds between attempts to create a missing stream


@dataclass(frozen=True)
class AuditSettings:
    """How a node keeps its audit records."""

    spool: Path  # the node's own spool file; never shared by two nodes
    required: bool = False  # refuse actions while neither stream nor spool can take the record
    ack_timeout: float = 2.0  # seconds to wait for the stream's acknowledgement before spooling
    spool_max_bytes: int = 1 << 30
    create_stream: bool = True  # create NMC_AUDIT when it is missing (never changes an existing one)
    max_age: float = DEFAULT_MAX_AGE  # of a stream this node creates
    replicas: int = 1  # of a stream this node creates (plugin.nats.jetstream_replicas)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ack_timeout) and self.ack_timeout > 0):
            raise ValueError(f"audit ack timeout must be a positive number of seconds, got {self.ack_timeout!r}")
        if self.spool_max_bytes <= 0:
            raise ValueError(f"audit spool_max_bytes must be positive, got {self.spool_max_bytes}")


@dataclass(eq=False, slots=True)
class _InFlight:
    """A record published and not yet acknowledged: spooled if no acknowledgement comes by `deadline`."""

    entry: SpoolEntry
    deadline: float  # event-loop time
    required: bool = False  # a record audit.required promises: AuditUnavailable (not a log line) if it is lost
    kept: asyncio.Future[None] | None = None  # made when someone waits until the record is kept


class JetStreamAuditor:
    """Publishes audit records to NMC_AUDIT with de-duplication ids; spools and resends when it cannot."""

    def __init__(self, settings: AuditSettings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool, max_bytes=settings.spool_max_bytes)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._signer: Signer | None = None  # the node's: every record is signed when it is (re)sent
        self._spooling = False  # the stream failed us: keep order by spooling until the spool is empty
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log: Any = log
        self._ensured_at: float | None = None
        self._handover: asyncio.Event | None = None  # set while the resender sends the spool's last records
        self._stream_ok = True  # the last resend succeeded: send whole batches
        # Acknowledgements tracked asynchronously: records in flight by reply token, oldest first.
        self._inflight: dict[str, _InFlight] = {}
        self._ack_prefix = ""  # `<inbox>.`; the token after it names the record
        self._ack_sub: Any = None
        self._sent = 0  # tokens handed out
        self._expiry: asyncio.Task[None] | None = None
        self._expiry_wake = asyncio.Event()
        self._failing: set[asyncio.Task[None]] = set()  # records whose acknowledgement failed, being spooled
        self._closing = False  # stop() began: every record is kept before record() returns
        self._subjects: dict[tuple[str, str], str] = {}
        self.published = 0  # records the stream acknowledged on the first try
        self.resent = 0  # spooled records the stream acknowledged later
        self.lost = 0  # records neither stream nor spool took (only when not required)

    @property
    def in_flight(self) -> int:
        """Records published and not yet acknowledged, or on their way to the spool."""
        return len(self._inflight) + len(self._failing)

    # Companion
    async def start(self, node: NodeView) -> None:
        """Use the node's connection; resend whatever an earlier run left in the spool."""
        if self._task is not None:
            raise RuntimeError("JetStreamAuditor is already running; use one per node")
        self._log = log.bind(identity=node.identity)
        self._closing = False
        try:
            left = await self.spool.load()
        except SpoolError as exc:
            self._log.error("audit_spool_unreadable", error=exc.reason, spool=str(self.spool.path))
            left = 0
        if left:
            self._log.info("audit_spool_found", **self.spool.describe())
        self._signer = node.signer
        self._js = node.nc.jetstream(timeout=self.settings.ack_timeout) if node.nc is not None else None
        self._nc = node.nc
        if node.nc is not None:
            # One subscription for every acknowledgement, in the node's own inbox (the only place a
            # node may subscribe); a random prefix per run, the record's number after it.
            self._ack_prefix = node.nc.new_inbox() + "."
            self._ack_sub = await node.nc.subscribe(self._ack_prefix + "*", cb=self._on_ack)
            self._expiry = asyncio.create_task(self._expire_loop(), name=f"nmc-audit-acks {node.identity}")
        await self._ensure_stream()
        self._task = asyncio.create_task(self._resend_loop(), name=f"nmc-audit-resend {node.identity}")

    async def facts_changed(self, node: NodeView) -> None:
        """Facts do not matter to auditing."""

    async def stop(self) -> None:
        """Stop resending, once every record in flight is acknowledged or spooled (at most `ack_timeout`).

        Records made after this still go to the stream (while connected) or the spool, each
        kept before `record()` returns, as nothing tracks acknowledgements any more.
        """
        self._closing = True
        await cancel_and_wait(self._task)
        self._task = None
        await self.settle()
        await cancel_and_wait(self._expiry)
        self._expiry = None
        if self._ack_sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._ack_sub.unsubscribe()
            self._ack_sub = None
        if len(self.spool):
            self._log.warning("audit_spool_left", **self.spool.describe())

    async def settle(self) -> None:
        """Wait until every record handed over so far is acknowledged by the stream or on disk in the spool."""
        loop = asyncio.get_running_loop()
        while self._inflight or self._failing:
            if self._inflight:
                # Records expire oldest first: once the newest is settled, so is every earlier one.
                newest = next(reversed(self._inflight.values()))
                if newest.kept is None:
                    newest.kept = loop.create_future()
                with contextlib.suppress(AuditUnavailable):
                    await asyncio.shield(newest.kept)
            else:
                await asyncio.gather(*self._failing, return_exceptions=True)

    # Auditor
    async def record(self, record: AuditRecord) -> None:
        """Hand one record over: published with its acknowledgement tracked, or fsync'd in the spool.

        A decision record with `audit.required`, and any record once `stop()` began, is
        kept (acknowledged, or spooled) before this returns; AuditUnavailable if such a
        record is required and neither the stream nor the spool took it.
        """
        key = (record.collective, record.identity)
        subject = self._subjects.get(key)
        if subject is None:
            subject = self._subjects[key] = audit_subject(*key)
        entry = SpoolEntry(subject=subject, msg_id=record.msg_id, payload=encode_record(record))
        handover = self._handover
        if handover is not None:
            # The resender is sending the spool's last records: wait a moment rather than join the spool.
            await handover.wait()
        if not self._must_spool():
            try:
                if self._closing or self._ack_sub is None:
                    await self._publish(entry)  # nothing tracks acknowledgements: wait for this one
                    self.published += 1
                    return
                item = await self._send(entry, wait=self.settings.required and record.phase == "decision")
            except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
                self._stream_failed(exc)
            else:
                if item.kept is not None:
                    await item.kept  # acknowledged, or spooled; AuditUnavailable when neither
                return
        await self._to_spool(entry, required=self.settings.required)

    def _must_spool(self) -> bool:
        nc = self._nc
        return self._spooling or len(self.spool) > 0 or self._js is None or nc is None or not nc.is_connected

    def _stream_failed(self, exc: BaseException | str) -> None:
        # Every later record queues behind this one until the spool is empty again.
        if not self._spooling:
            self._log.warning("audit_stream_unavailable", error=exc if isinstance(exc, str) else _reason(exc),
                              spool=str(self.spool.path))
        self._spooling = True

    def _headers(self, entry: SpoolEntry) -> dict[str, str]:
        assert self._signer is not None
        # Signed here rather than when made: a spooled record is signed by the certificate the node runs
        # with when it resends it (still this node's), and the spool keeps no signatures to go stale.
        return {"Nats-Msg-Id": header_msg_id(entry.msg_id), **self._signer.headers(entry.payload)}

    async def _publish(self, entry: SpoolEntry) -> None:
        """Publish and wait for the acknowledgement (resends, and records made while stopping)."""
        assert self._js is not None
        await self._js.publish(entry.subject, entry.payload, timeout=self.settings.ack_timeout,
                               headers=self._headers(entry))

    async def _send(self, entry: SpoolEntry, *, wait: bool) -> _InFlight:
        """Publish with a reply subject of our own and track the acknowledgement (see the module doc)."""
        assert self._nc is not None
        loop = asyncio.get_running_loop()
        self._sent += 1
        token = str(self._sent)
        item = _InFlight(entry, loop.time() + self.settings.ack_timeout, wait, loop.create_future() if wait else None)
        self._inflight[token] = item  # before publishing: the acknowledgement may come while publish() flushes
        if len(self._inflight) == 1:
            # Wake the expiry loop now, not after publishing: publish() may wait for a flush, and
            # another record added meanwhile would find two in flight and wake nobody.
            self._expiry_wake.set()
        try:
            await self._nc.publish(entry.subject, entry.payload, reply=self._ack_prefix + token,
                                   headers=self._headers(entry))
        except BaseException:
            self._inflight.pop(token, None)
            if item.kept is not None and not item.kept.done():
                item.kept.set_result(None)  # not in flight after all: record() spools it itself; settle() goes on
            raise
        return item

    async def _on_ack(self, msg: Msg) -> None:
        """An acknowledgement (or a refusal) of a record in flight."""
        item = self._inflight.pop(msg.subject[len(self._ack_prefix):], None)
        if item is None:
            return  # it came too late: the record is in the spool already, and its resend is a duplicate
        error = _ack_error(msg)
        if error is None:
            self.published += 1
            if item.kept is not None and not item.kept.done():
                item.kept.set_result(None)
            return
        self._spool_failed([item], error)

    async def _expire_loop(self) -> None:
        """Spool the records whose acknowledgement did not come within `ack_timeout`, oldest first."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._inflight:
                self._expiry_wake.clear()
                await self._expiry_wake.wait()
                continue
            # Deadlines grow with the order of publishing, so the oldest record is the first to expire.
            delay = next(iter(self._inflight.values())).deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            now = loop.time()
            expired: list[_InFlight] = []
            for token, item in list(self._inflight.items()):
                if item.deadline > now:
                    break
                del self._inflight[token]
                expired.append(item)
            self._spool_failed(expired, f"no acknowledgement within {self.settings.ack_timeout:g}s")

    def _spool_failed(self, items: list[_InFlight], reason: str) -> None:
        """Put records the stream did not acknowledge in the spool (in a task: acknowledgements keep coming)."""
        self._stream_failed(reason)
        task = asyncio.create_task(self._keep_in_spool(items))
        self._failing.add(task)
        task.add_done_callback(self._failing.discard)

    async def _keep_in_spool(self, items: list[_InFlight]) -> None:
        # Appended together (one fsync), in the order they were published.
        outcomes = await asyncio.gather(*(self._to_spool(item.entry, required=item.required) for item in items),
                                        return_exceptions=True)
        for item, outcome in zip(items, outcomes):
            if item.kept is None or item.kept.done():
                continue
            if isinstance(outcome, BaseException):
                item.kept.set_exception(outcome)
            else:
                item.kept.set_result(None)

    async def _to_spool(self, entry: SpoolEntry, *, required: bool) -> None:
        """Append `entry` to the spool; when it cannot be kept: AuditUnavailable if `required`, else logged as lost."""
        try:
            await self.spool.append(entry)
        except SpoolError as exc:
            if required:
                raise AuditUnavailable(f"stream and spool both failed: {exc.reason}") from exc
            self.lost += 1
            self._log.error("audit_record_lost", msg_id=entry.msg_id, error=exc.reason)
            return
        self._wake.set()

    async def _resend_loop(self) -> None:
        delay = 0.0  # back-off after the stream failed a resend; 0: wait for a new record or the poll interval
        self._wake.set()  # look at the spool at once: an earlier run may have left records
        while True:
            if delay:
                await asyncio.sleep(delay)  # new records do not shorten a back-off: the stream just failed
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=_RETRY_MAX)
            self._wake.clear()
            if not len(self.spool):
                self._spooling = False  # e.g. the spool could not take a record: nothing to resend, start afresh
                delay = 0.0
                continue
            if self._nc is None or not self._nc.is_connected:
                delay = _RETRY_MIN  # poll the connection cheaply: resend as soon as it is back
                continue
            if await self._drain():
                self._log.info("audit_stream_back", resent=self.resent)
                delay = 0.0
            else:
                await self._ensure_stream()
                delay = min(max(delay * 2, _RETRY_MIN), _RETRY_MAX)

    async def _drain(self) -> bool:
        """Resend until the spool is empty (True) or the stream fails again (False).

        Under steady load new records arrive while old ones are resent, so the
        spool would never be empty by itself. Once what is left fits in one
        batch, new records wait for the end of the drain (a hand-over of a few
        milliseconds) and then go straight to the stream, still in order.
        """
        try:
            while True:
                if len(self.spool) <= _RESEND_BATCH and self._handover is None:
                    self._handover = asyncio.Event()
                await self.spool.settle()  # records being appended are on disk, so head() sees them
                if not len(self.spool):
                    self._spooling = False
                    return True
                if not await self._resend_some():
                    return False
        finally:
            handover, self._handover = self._handover, None
            if handover is not None:
                handover.set()

    async def _ensure_stream(self) -> None:
        """Create NMC_AUDIT if it is missing (at most every few seconds); a failure is only logged."""
        loop = asyncio.get_running_loop()
        if not self.settings.create_stream or self._js is None:
            return
        if self._ensured_at is not None and loop.time() - self._ensured_at < _ENSURE_EVERY:
            return
        self._ensured_at = loop.time()
        try:
            await ensure_stream(self._js, self.settings.max_age, update=False, replicas=self.settings.replicas)
        except AuditStreamError as exc:
            self._log.warning("audit_stream_unavailable", error=exc.reason, spool=str(self.spool.path))

    async def _resend_some(self) -> bool:
        """Send the oldest spooled records in order and drop the acknowledged ones; False when the stream failed."""
        # After a failure, one record probes the stream before a whole batch waits for acknowledgements.
        batch = self.spool.head(_RESEND_BATCH if self._stream_ok else 1)
        # Pipelined: the publishes leave in spool order on the one connection, the acks are awaited together.
        outcomes = await asyncio.gather(*(self._publish(entry) for entry in batch), return_exceptions=True)
        sent = 0
        failed = False
        for entry, outcome in zip(batch, outcomes):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, (nats.errors.Error, asyncio.TimeoutError, OSError)):
                    raise outcome
                # Only the acknowledged prefix leaves the spool; anything after it that did get stored
                # is sent again and dropped by the stream as a duplicate.
                self._log.debug("audit_resend_failed", error=_reason(outcome), msg_id=entry.msg_id)
                failed = True
                break
            sent += 1
        self._stream_ok = not failed
        if sent:
            try:
                # Shielded: a stop() while the file is rewritten must not leave memory and file apart.
                await asyncio.shield(self.spool.drop(sent))
            except SpoolError as exc:
                # The records are in the stream; a later resend of them is a duplicate the stream drops.
                self._log.error("audit_spool_rewrite_failed", error=exc.reason)
                return False
            self.resent += sent
        return not failed


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ack_error(msg: Msg) -> str | None:
    """None when `msg` is the stream's acknowledgement of a stored record, else why not.

    A "no responders" status (no stream takes the subject) and an error answer (stream
    full, wrong sequence, ...) are refusals; so is anything that is not an acknowledgement
    from NMC_AUDIT, since only the stream's word counts as kept.
    """
    status = msg.headers.get("Status") if msg.headers else None
    if status:
        return f"status {status}: no stream took the record" if status == "503" else f"status {status}"
    try:
        ack = json.loads(msg.data)
    except ValueError:
        return "unreadable acknowledgement"
    if not isinstance(ack, dict):
        return "unreadable acknowledgement"
    error = ack.get("error")
    if error is not None:
        return f"stream refused the record: {error.get('description', error) if isinstance(error, dict) else error}"
    if ack.get("stream") != STREAM or not isinstance(ack.get("seq"), int):
        return "not an acknowledgement from " + STREAM
    return None
