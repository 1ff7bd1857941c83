"""Registry discovery: read the nodes' JetStream key-value records instead of broadcasting.

A broadcast ends on a stall timer because nobody knows how many nodes will
answer. The registry (kept current by every node, see
`nmc.services.registry`) says who is there, so discovery is one read with a
definite end, and an rpc afterwards knows exactly whom to wait for and can
name the registered nodes that stayed silent.

The read is what a KV watcher does for its initial values, done by hand: one
ephemeral push consumer over `<collective>.>` delivering the last value per
key, not one GET per key. It ends after exactly as many records as the
consumer had when it was created (nats.go's "initial consumer pending"):
nats-py's own watcher decides that from a consumer-info call made after
delivery has begun and can announce the end before any record arrived
(seen here as an empty registry for a live fleet, now and then).
The filter is then evaluated here, on the records, with the same `matches`
the nodes use.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from nmc.protocol.filter import Node as FilterTree
from nmc.protocol.filter import matches, parse
from nmc.protocol.registry import (
    DEFAULT_BUCKET,
    RecordError,
    RegistryEntry,
    check_bucket,
    collective_keys,
)

__all__ = ["RegistryEntry", "RegistryError", "RegistrySnapshot", "read_registry", "registry_discover",
           "select_entries"]

log = structlog.get_logger("nmc.registry")
# The server drops the read's ephemeral consumer this long after we unsubscribe (nats-py's
# default, 5 min, would leave one consumer per `--dm registry` command on the server for minutes).
_CONSUMER_GC = 5.0
# Headers that make a KV message a removal rather than a value (ADR-8; the marker is nats-server 2.11+).
_KV_OPERATION, _REMOVED, _MARKER = "KV-Operation", ("DEL", "PURGE"), "Nats-Marker-Reason"


class RegistryError(Exception):
    """The registry cannot be read (no bucket, no JetStream, timeout); one line, names the bucket."""

    def __init__(self, bucket: str, reason: str) -> None:
        super().__init__(reason)
        self.bucket = bucket
        self.reason = reason


@dataclass(frozen=True)
class RegistrySnapshot:
    """Every valid record of one collective at the time of the read, and what the read cost."""

    entries: tuple[RegistryEntry, ...]
    skipped: int  # malformed records left out (each logged)
    elapsed: float  # seconds for the whole read
    last_record: float  # seconds from the start of the read to the arrival of the last record


def _check_entry(key: str, value: bytes) -> RegistryEntry:
    entry = RegistryEntry.from_bytes(value)
    if entry.key != key:
        # A record under another node's key would let one node hide or impersonate another.
        raise RecordError(f"record for {entry.identity!r} in {entry.collective!r} is stored under another key")
    return entry


def _is_removal(msg: Msg) -> bool:
    headers = msg.headers or {}
    return headers.get(_KV_OPERATION) in _REMOVED or _MARKER in headers


async def _start_consumer(nc: NATS, bucket: str, collective: str, inbox: str, timeout: float) -> int:
    """Create the read's consumer; returns how many records it will deliver as the initial values."""
    config = ConsumerConfig(deliver_subject=inbox, filter_subject=f"$KV.{bucket}.{collective_keys(collective)}",
                            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, ack_policy=AckPolicy.NONE,
                            inactive_threshold=_CONSUMER_GC, mem_storage=True, num_replicas=1)
    try:
        info = await nc.jetstream(timeout=timeout).add_consumer(f"KV_{bucket}", config=config)
    except NotFoundError:
        raise RegistryError(bucket, f"no registry bucket {bucket!r}: are the nodes started with registerinterval > 0?") from None
    except (nats.errors.Error, TimeoutError) as exc:
        raise RegistryError(bucket, f"cannot read registry bucket {bucket!r}: "
                                    f"{str(exc) or type(exc).__name__} (is JetStream enabled on the broker?)") from exc
    # What is still pending plus what was already sent: exact however far delivery got meanwhile.
    delivered = info.delivered.consumer_seq if info.delivered is not None else 0
    return (info.num_pending or 0) + delivered


async def read_registry(nc: NATS, collective: str, *, bucket: str = DEFAULT_BUCKET,
                        timeout: float = 5.0) -> RegistrySnapshot:
    """Every current, well-formed record of `collective`; RegistryError if the bucket cannot be read."""
    try:
        check_bucket(bucket)
    except ValueError as exc:
        raise RegistryError(bucket, str(exc)) from exc
    started = time.monotonic()
    deadline = started + timeout
    prefix = f"$KV.{bucket}."
    inbox = nc.new_inbox()
    # Subscribed before the consumer exists, so no delivery can go unheard.
    sub = await nc.subscribe(inbox)
    records: dict[str, RegistryEntry] = {}
    skipped = 0
    last_record = 0.0
    try:
        total = await _start_consumer(nc, bucket, collective, inbox, timeout)
        for expected in range(1, total + 1):
            try:
                msg = await sub.next_msg(timeout=max(deadline - time.monotonic(), 0.001))
            except nats.errors.TimeoutError:
                raise RegistryError(bucket, f"reading registry bucket {bucket!r} took longer than {timeout:g} s "
                                            f"({expected - 1} of {total} records)") from None
            last_record = time.monotonic() - started
            if msg.metadata.sequence.consumer != expected:
                # Without acks a lost delivery is not resent: say so rather than return a partial registry.
                raise RegistryError(bucket, f"registry read lost records ({expected - 1} of {total}); try again")
            key = msg.subject[len(prefix):]
            if _is_removal(msg):
                records.pop(key, None)
                continue
            try:
                records[key] = _check_entry(key, msg.data)
            except RecordError as exc:
                skipped += 1
                records.pop(key, None)
                log.warning("registry_record_skipped", bucket=bucket, key=key, reason=exc.reason)
    finally:
        await sub.unsubscribe()
    return RegistrySnapshot(entries=tuple(records.values()), skipped=skipped,
                            elapsed=time.monotonic() - started, last_record=last_record)


def select_entries(entries: Iterable[RegistryEntry], tree: FilterTree, *, max_age: float | None = None,
                   now: float | None = None) -> list[RegistryEntry]:
    """The entries a filter selects, fresher than `max_age` seconds if given, sorted by identity."""
    now = time.time() if now is None else now
    chosen = [e for e in entries
              if (max_age is None or now - e.last_seen <= max_age)
              and matches(tree, e.facts, e.classes, e.identity, e.agents)]
    return sorted(chosen, key=lambda e: e.identity)


async def registry_discover(nc: NATS, collective: str, filter_expr: str, *, bucket: str = DEFAULT_BUCKET,
                            max_age: float | None = None, timeout: float = 5.0) -> list[RegistryEntry]:
    """The registered nodes of `collective` that `filter_expr` selects, without a broadcast."""
    tree = parse(filter_expr)  # a syntax error fails before any I/O
    snapshot = await read_registry(nc, collective, bucket=bucket, timeout=timeout)
    found = select_entries(snapshot.entries, tree, max_age=max_age)
    log.debug("registry_discovered", bucket=bucket, records=len(snapshot.entries), skipped=snapshot.skipped,
              found=len(found), elapsed_ms=round(snapshot.elapsed * 1000, 1))
    return found
