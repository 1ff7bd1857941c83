"""Reading NMC_AUDIT directly, for `nmc audit tail` and `nmc audit query` (no audit service needed).

An ephemeral pull consumer without acknowledgements reads the stream in
order from a start point (a sequence for `tail -n`, a time for `--since`),
filtered by subject where the query allows it (collective and identity are
subject tokens). It lives in the server's memory only and is deleted when
the reader ends (or after a minute of inactivity if the reader dies). If it
is lost (a broker restart while following), the reader makes a new one
starting after the last record it saw. Copies of a record (a node's resend
that got past the stream's de-duplication window) are shown once.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from nmc.audit.dedup import RecentIds
from nmc.audit.errors import AuditRecordError, AuditStreamError
from nmc.audit.formats import parse_time
from nmc.audit.records import decode_record, record_msg_id
from nmc.audit.stream import STREAM
from nmc.protocol.subjects import PREFIX, encode_token

__all__ = ["AuditQuery", "read_records"]

# Records are stamped by the node, stored by the broker: allow their clocks to differ this much.
CLOCK_SKEW = timedelta(minutes=5)
_FETCH = 500


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
        if self.collective is None and self.identity is None:
            return f"{PREFIX}.audit.>"
        collective = encode_token(self.collective) if self.collective is not None else "*"
        identity = encode_token(self.identity) if self.identity is not None else "*"
        return f"{PREFIX}.audit.{collective}.{identity}"

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


async def read_records(js: JetStreamContext, query: AuditQuery = AuditQuery(), *, last: int | None = None,
                       follow: bool = False, idle: float = 1.0) -> AsyncIterator[dict[str, Any]]:
    """Yield matching records in stream order; end at the end of the stream unless `follow`.

    `last` N starts N messages before the end (of the whole stream; use it
    without subject filters). Raises AuditStreamError when the stream cannot
    be read (no JetStream, no stream yet, no permission).
    """
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError as exc:
        raise AuditStreamError(f"stream {STREAM} does not exist yet (the audit service or "
                               "`nmc audit setup` creates it)") from exc
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
            name, sub, pending = await _subscribe(js, query.subject(), start_seq, start_time)
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
                        return  # the consumer said there was more, but nothing came: the stream shrank
                    # Nothing new. Make sure the consumer still exists (a broker restart drops it).
                    await js.consumer_info(STREAM, name)
                    continue
                delay = 0.1
                remaining = None
                for msg in msgs:
                    meta = msg.metadata
                    start_seq, start_time = meta.sequence.stream + 1, None
                    remaining = meta.num_pending
                    try:
                        record = decode_record(msg.data)
                    except AuditRecordError:
                        continue
                    msg_id = record_msg_id(record)
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
            # Following across a broker restart: a new consumer, after the last record seen.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await js.delete_consumer(STREAM, name)


async def _subscribe(js: JetStreamContext, subject: str, start_seq: int | None,
                     start_time: datetime | None) -> tuple[str, Any, int]:
    """An ephemeral pull consumer on `subject`: its name, subscription and how many messages it will deliver."""
    name = f"nmc-audit-read-{secrets.token_hex(6)}"
    config = ConsumerConfig(name=name, ack_policy=AckPolicy.NONE, mem_storage=True, num_replicas=1,
                            inactive_threshold=60.0, filter_subject=subject, deliver_policy=DeliverPolicy.ALL)
    if start_seq is not None:
        config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, start_seq
    elif start_time is not None:
        config.deliver_policy, config.opt_start_time = DeliverPolicy.BY_START_TIME, start_time
    try:
        info = await js.add_consumer(STREAM, config)
        sub = await js.pull_subscribe_bind(consumer=name, stream=STREAM)
    except nats.errors.Error as exc:
        raise AuditStreamError(f"cannot read stream {STREAM}: {type(exc).__name__}: {exc}") from exc
    return name, sub, int(info.num_pending or 0)
