"""The node's Auditor: records go to JetStream, and to a local spool whenever the stream cannot take them.

`JetStreamAuditor` is both the pipeline's Auditor and a node Companion (it
needs the node's NATS connection, which exists only once the node started):
pass the same instance as `auditor=` and in `companions=`.

A record is published signed with the node's own certificate (the headers
`Nmc-Signature` and `Nmc-Certificate` over the exact body, as requests are:
the audit service writes nothing it cannot verify as this node's), with
`Nats-Msg-Id: <identity>:<request id>:<phase>:<nonce>` (the nonce is made with
the record and kept with it in the spool, so no other node can know the id
first and a resend keeps it) and a short ack timeout. If no acknowledgement
comes (broker down, JetStream not ready, stream missing or full), the record
is appended to the spool and fsync'd. From then on, and as long as the spool holds anything, new records
go to the spool too, so the stream receives them in the order they were
made. A background task resends the spool, oldest first, whenever the
stream answers again (and right after start, for what an earlier run left),
and removes only what the stream acknowledged. A publish that timed out may
still have been stored; its resend carries the same Nats-Msg-Id, so the
stream drops the copy inside its de-duplication window, and the audit
service drops any copy that gets past it.

At start (and after a failed resend, at most every few seconds) the node
creates NMC_AUDIT if it does not exist yet, with its own `audit.max_age`;
it never changes an existing stream (the audit service owns its settings).
Without permission to create it, records wait in the spool until someone does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from nmc.audit.errors import AuditStreamError, SpoolError
from nmc.audit.hooks import AuditUnavailable
from nmc.audit.records import encode_record
from nmc.audit.spool import Spool, SpoolEntry
from nmc.audit.stream import DEFAULT_MAX_AGE, ensure_stream
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
        self.published = 0  # records the stream acknowledged on the first try
        self.resent = 0  # spooled records the stream acknowledged later
        self.lost = 0  # records neither stream nor spool took (only when not required)

    # Companion
    async def start(self, node: NodeView) -> None:
        """Use the node's connection; resend whatever an earlier run left in the spool."""
        if self._task is not None:
            raise RuntimeError("JetStreamAuditor is already running; use one per node")
        self._log = log.bind(identity=node.identity)
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
        await self._ensure_stream()
        self._task = asyncio.create_task(self._resend_loop(), name=f"nmc-audit-resend {node.identity}")

    async def facts_changed(self, node: NodeView) -> None:
        """Facts do not matter to auditing."""

    async def stop(self) -> None:
        """Stop resending. Records made after this still go to the stream (while connected) or the spool."""
        await cancel_and_wait(self._task)
        self._task = None
        if len(self.spool):
            self._log.warning("audit_spool_left", **self.spool.describe())

    # Auditor
    async def record(self, record: AuditRecord) -> None:
        """Keep one record: acknowledged by the stream, else fsync'd in the spool; AuditUnavailable if required and neither."""
        entry = SpoolEntry(subject=audit_subject(record.collective, record.identity), msg_id=record.msg_id,
                           payload=encode_record(record))
        handover = self._handover
        if handover is not None:
            # The resender is sending the spool's last records: wait a moment rather than join the spool.
            await handover.wait()
        if not self._must_spool():
            try:
                await self._publish(entry)
                self.published += 1
                return
            except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
                # Every later record queues behind this one until the spool is empty again.
                if not self._spooling:
                    self._log.warning("audit_stream_unavailable", error=_reason(exc), spool=str(self.spool.path))
                self._spooling = True
        await self._to_spool(entry)

    def _must_spool(self) -> bool:
        nc = self._nc
        return self._spooling or len(self.spool) > 0 or self._js is None or nc is None or not nc.is_connected

    async def _publish(self, entry: SpoolEntry) -> None:
        assert self._js is not None and self._signer is not None
        # Signed here rather than when made: a spooled record is signed by the certificate the node runs
        # with when it resends it (still this node's), and the spool keeps no signatures to go stale.
        headers = {"Nats-Msg-Id": header_msg_id(entry.msg_id), **self._signer.headers(entry.payload)}
        await self._js.publish(entry.subject, entry.payload, timeout=self.settings.ack_timeout, headers=headers)

    async def _to_spool(self, entry: SpoolEntry) -> None:
        try:
            await self.spool.append(entry)
        except SpoolError as exc:
            if self.settings.required:
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
