"""The audit service (`nmc serve audit`): NMC_AUDIT -> JSON-lines file (rotated) and, optionally, syslog.

A durable pull consumer (`nmc-audit`, explicit ack) fetches records in
batches. For each batch the service drops records it already wrote (a bounded
set of recent ids, read back from the file at start: see nmc.audit.dedup),
sends the rest to syslog, appends them to the file (flushed and fsync'd) and
only then acknowledges the batch. A crash before the acks means redelivery,
and the redelivered records are recognised as written. A restart resumes at
the consumer's position. It also registers the ADR-32 service `nmc-audit`,
so `nats micro ls` and the `$SRV` verbs find it.

The stream is the operator's (`nmc audit setup`): the service looks it up
and never changes it (it creates it only where the broker lets it, with no
permissions). The consumer is the service's alone (no other role may touch
it), and the service makes sure it stays the one it reads through: when it
finds it deleted or changed (another filter, a deliver subject, ...) on an
idle fetch or every few seconds, it makes it again starting at the record
after the last one it handled, so records that went past a changed consumer
are not lost (the ones written already are recognised as duplicates).

Only genuine records are written: signed by a node's certificate whose name
is the record's identity and its subject's (nmc.audit.verify). Anything else
is counted (`bad`: not a record, `refused`: not genuine), logged with its
reason and stream sequence, acknowledged so it does not block the stream,
and left in the stream (`nmc audit query --unverified` shows it, marked).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from nmc import __version__
from nmc.audit.dedup import RecentIds
from nmc.audit.errors import AuditRecordError, AuditRecordRefused, AuditStreamError, SinkError
from nmc.audit.formats import FILE_FORMATS, SYSLOG_FACILITIES
from nmc.audit.records import record_msg_id
from nmc.audit.sinks import FileSink, SyslogSink, SyslogTarget
from nmc.audit.stream import DEFAULT_MAX_AGE, STREAM, STREAM_SUBJECTS, ensure_stream
from nmc.audit.verify import RecordVerifier
from nmc.services.micro import MicroService
from nmc.transport import connect, daemon_options

__all__ = ["SERVICE_NAME", "AuditService", "AuditServiceSettings"]

SERVICE_NAME = "nmc-audit"
log = structlog.get_logger("nmc.audit")
_BACKOFF_MIN, _BACKOFF_MAX = 0.2, 5.0
_CHECK_EVERY = 5.0  # seconds between looks at the consumer while records keep coming
_SETUP_HINT = "the operator creates it: `nmc audit setup` with a certificate of role operator"


@dataclass(frozen=True)
class AuditServiceSettings:
    """Everything the audit service needs: brokers, the file, syslog and the consumer."""

    file: Path
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    format: str = "json"  # json | mcollective
    rotate_bytes: int = 100 << 20
    keep: int = 10
    syslog: SyslogTarget | None = None
    syslog_facility: str = "local0"
    consumer: str = "nmc-audit"
    max_age: float = DEFAULT_MAX_AGE
    replicas: int = 1  # JetStream servers keeping NMC_AUDIT (plugin.nats.jetstream_replicas)
    dedup_ids: int = 100_000
    batch: int = 256
    ack_wait: float = 30.0  # seconds before JetStream redelivers a record the service has not acknowledged
    tls: Any = None
    reconnect_wait: float = 0.5
    fetch_wait: float = 1.0

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("at least one NATS server URL is needed")
        if not self.consumer or any(c in self.consumer for c in " .*>"):
            raise ValueError(f"audit consumer name must be one word without . * > or spaces, got {self.consumer!r}")
        for name in ("dedup_ids", "batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"audit {name} must be positive, got {getattr(self, name)}")
        if not (math.isfinite(self.ack_wait) and self.ack_wait > 0):
            raise ValueError(f"audit ack_wait must be a positive number of seconds, got {self.ack_wait!r}")
        if self.format not in FILE_FORMATS:
            raise ValueError(f"audit.format must be one of {', '.join(FILE_FORMATS)}, got {self.format!r}")
        if self.syslog_facility not in SYSLOG_FACILITIES:
            raise ValueError(f"audit.syslog_facility must be one of {', '.join(SYSLOG_FACILITIES)}, "
                             f"got {self.syslog_facility!r}")
        if self.rotate_bytes <= 0 or self.keep < 0:
            raise ValueError("audit.rotate_bytes must be positive and audit.keep 0 or more")


@dataclass
class ServiceCounters:
    """What the service did since it started."""

    written: int = 0
    duplicates: int = 0
    bad: int = 0  # not an audit record at all
    refused: int = 0  # a record, but not a genuine one of the node it names (never written)
    batches: int = 0
    sink_errors: int = 0


class AuditService:
    """Consumes NMC_AUDIT and writes every record once to the file (and to syslog)."""

    def __init__(self, settings: AuditServiceSettings, verifier: RecordVerifier) -> None:
        self.settings = settings
        self.verifier = verifier
        self.file = FileSink(settings.file, format=settings.format, rotate_bytes=settings.rotate_bytes,
                             keep=settings.keep)
        self.syslog = (SyslogSink(settings.syslog, facility=settings.syslog_facility)
                       if settings.syslog is not None else None)
        self.counters = ServiceCounters()
        self.recent: RecentIds | None = None
        self.nc: NATS | None = None
        self.micro: MicroService | None = None
        self._js: JetStreamContext | None = None
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._next_seq: int | None = None  # the stream sequence after the last record handled
        self._checked = 0.0  # when the consumer was last found as it should be (monotonic)
        self._stream_warned = False
        self._stopping = asyncio.Event()
        self._log = log.bind(consumer=settings.consumer, file=str(settings.file))

    async def start(self, *, give_up_after: float | None = None) -> None:
        """Read back recent ids, connect, register `nmc-audit` and start consuming (SinkError, nats errors).

        The first connection is retried until `give_up_after` seconds (forever when None), then ConnectError.
        """
        self.recent = await self.file.open(self.settings.dedup_ids)
        opts = daemon_options(SERVICE_NAME, self.settings.servers, self.settings.tls, self.settings.reconnect_wait)
        self.nc = await connect(opts, give_up_after=give_up_after, on_retry=self._on_connect_failed,
                                error_cb=self._on_error, disconnected_cb=self._on_disconnect,
                                reconnected_cb=self._on_reconnect)
        self._js = self.nc.jetstream()
        metadata = {"stream": STREAM, "consumer": self.settings.consumer, "file": str(self.settings.file),
                    "format": self.settings.format, "syslog": str(self.settings.syslog or "")}
        self.micro = MicroService(self.nc, name=SERVICE_NAME, version=__version__,
                                  description="nmc audit service: NMC_AUDIT to a JSON-lines file and syslog",
                                  metadata=metadata)
        await self.micro.start()
        self._task = asyncio.create_task(self._run(), name="nmc-audit-consume")
        self._log.info("audit_service_started", servers=list(self.settings.servers), remembered=len(self.recent),
                       syslog=str(self.settings.syslog or ""), format=self.settings.format, service_id=self.micro.id)

    async def stop(self) -> None:
        """Finish the batch in hand (written and acknowledged), then disconnect."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.micro is not None:
            await self.micro.stop(grace=1.0)
        if self.syslog is not None:
            await self.syslog.close()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)  # the last acks
            with contextlib.suppress(Exception):
                await self.nc.close()
        self._log.info("audit_service_stopped", written=self.counters.written, duplicates=self.counters.duplicates,
                       refused=self.counters.refused)

    async def _pause(self, seconds: float) -> bool:
        """Wait `seconds` or until stop() is called; True if stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()

    async def _subscribe(self) -> Any:
        """Find the stream, make sure the durable consumer is the one the service reads through, bind to it."""
        assert self._js is not None
        await self._find_stream()
        await self._ensure_consumer()
        self._checked = time.monotonic()
        return await self._js.pull_subscribe_bind(durable=self.settings.consumer, stream=STREAM)

    async def _find_stream(self) -> None:
        """The stream as the operator made it; created only where the broker lets any client (no permissions)."""
        assert self._js is not None
        try:
            info = await ensure_stream(self._js, self.settings.max_age, update=False, replicas=self.settings.replicas)
        except AuditStreamError as exc:
            raise AuditStreamError(f"{exc.reason} ({_SETUP_HINT})") from exc
        have = (info.config.max_age or 0, info.config.num_replicas or 1)
        if have != (self.settings.max_age, self.settings.replicas) and not self._stream_warned:
            self._stream_warned = True
            self._log.warning("audit_stream_settings_differ", stream_max_age=have[0], stream_replicas=have[1],
                              max_age=self.settings.max_age, replicas=self.settings.replicas,
                              hint="the stream keeps its settings; `nmc audit setup --max-age ...` changes them")

    def _wanted_consumer(self, start_seq: int | None) -> ConsumerConfig:
        """The durable pull consumer of every audit record, from `start_seq` (None: the stream's first)."""
        config = ConsumerConfig(durable_name=self.settings.consumer, name=self.settings.consumer,
                                ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                filter_subject=STREAM_SUBJECTS[0], ack_wait=self.settings.ack_wait, max_deliver=-1,
                                max_ack_pending=self.settings.batch * 4,
                                description="nmc audit service: writes every record to its file")
        if start_seq is not None:
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, start_seq
        return config

    @staticmethod
    def _changed(config: ConsumerConfig) -> str | None:
        """Why a consumer found under the service's name may have let records past unwritten (None: it did not)."""
        filters = list(config.filter_subjects or []) or ([config.filter_subject] if config.filter_subject else [])
        if filters != [STREAM_SUBJECTS[0]]:
            return f"filter {', '.join(filters) or '(none)'}"
        if config.deliver_subject:
            return f"push consumer delivering to {config.deliver_subject}"
        if config.ack_policy != AckPolicy.EXPLICIT:
            return f"ack policy {config.ack_policy}"
        if config.headers_only:
            return "delivers headers only"
        if config.max_deliver not in (None, 0, -1):
            return f"max_deliver {config.max_deliver}"
        return None

    async def _ensure_consumer(self) -> None:
        """Create the consumer, or make it again when it was changed, or set the service's ack settings on it."""
        assert self._js is not None
        name = self.settings.consumer
        try:
            try:
                info = await self._js.consumer_info(STREAM, name)
            except NotFoundError:
                await self._js.add_consumer(STREAM, self._wanted_consumer(self._next_seq))
                return
            reason = self._changed(info.config)
            if reason is not None:
                # Records may have gone past it unwritten: start again after the last one handled (the
                # stream's first when this process handled none yet; those written are duplicates).
                with contextlib.suppress(NotFoundError):
                    await self._js.delete_consumer(STREAM, name)
                await self._js.add_consumer(STREAM, self._wanted_consumer(self._next_seq))
                self._log.warning("audit_consumer_restored", reason=reason,
                                  from_stream_seq=self._next_seq or "first")
            elif (info.config.ack_wait, info.config.max_ack_pending) != (self.settings.ack_wait,
                                                                          self.settings.batch * 4):
                config = info.config
                config.ack_wait, config.max_ack_pending = self.settings.ack_wait, self.settings.batch * 4
                await self._js.add_consumer(STREAM, config)  # same name: updated in place, position kept
        except Exception as exc:  # noqa: BLE001 - reported with the server's reason, retried by the caller
            raise AuditStreamError(f"consumer {name}: {getattr(exc, 'description', None) or exc}") from exc

    async def _check_consumer(self) -> None:
        """Drop the subscription if the consumer was deleted or changed: `_run` then puts it back (`_subscribe`)."""
        assert self._js is not None
        self._checked = time.monotonic()
        try:
            info = await self._js.consumer_info(STREAM, self.settings.consumer)
        except NotFoundError:
            reason: str | None = "deleted"
        except Exception:  # noqa: BLE001 - a connection problem: the next fetch reports it, the next look retries
            return
        else:
            reason = self._changed(info.config)
        if reason is not None:
            self._log.warning("audit_consumer_changed", reason=reason)
            await self._drop_subscription()

    async def _run(self) -> None:
        delay = _BACKOFF_MIN
        while not self._stopping.is_set():
            if self._sub is None:
                try:
                    self._sub = await self._subscribe()
                    delay = _BACKOFF_MIN
                except AuditStreamError as exc:
                    self._log.warning("audit_consumer_unavailable", error=exc.reason, retry_in=delay)
                    if await self._pause(delay):
                        return
                    delay = min(delay * 2, _BACKOFF_MAX)
                    continue
            fetch = asyncio.ensure_future(self._sub.fetch(self.settings.batch, timeout=self.settings.fetch_wait))
            stopping = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if fetch not in done:
                fetch.cancel()
                with contextlib.suppress(BaseException):
                    await fetch
                return
            stopping.cancel()
            try:
                msgs = fetch.result()
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                # nats-py's fetch raises either, depending on where the wait ran out. Nothing new:
                # make sure that is because nothing came, not because the consumer was changed.
                await self._check_consumer()
                continue
            except nats.errors.Error as exc:
                # A consumer deleted under us, a connection problem: rebuild the subscription.
                self._log.warning("audit_fetch_failed", error=f"{type(exc).__name__}: {exc}")
                await self._drop_subscription()
                if await self._pause(delay):
                    return
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            delay = _BACKOFF_MIN
            await self._handle(msgs)
            if time.monotonic() - self._checked >= _CHECK_EVERY:
                await self._check_consumer()  # records keep coming, but maybe not all of them

    async def _drop_subscription(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _handle(self, msgs: list[Any]) -> None:
        """Write the new records of one batch to every sink, then acknowledge the whole batch."""
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
            return  # stopping with the batch unwritten: unacknowledged, so it is redelivered
        for msg_id in ids:
            self.recent.add(msg_id)
        for msg in msgs:
            with contextlib.suppress(nats.errors.Error):
                await msg.ack()
        handled = [seq for seq in map(_stream_seq, msgs) if seq is not None]
        if handled:
            self._next_seq = max(handled) + 1  # where a consumer made again starts
        self.counters.written += len(fresh)
        self.counters.batches += 1
        if duplicates:
            self.counters.duplicates += duplicates
            self._log.info("audit_duplicates_dropped", count=duplicates)
        self._log.debug("audit_batch_written", records=len(fresh))

    async def _write(self, records: list[dict[str, Any]]) -> bool:
        """Syslog first, then the file (the file is what duplicates are recognised by); retry until it works."""
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
