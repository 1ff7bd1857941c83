"""The registry publisher: a node keeps its own record in a JetStream key-value bucket current.

MCollective's registration (`registerinterval`), as a KV bucket instead of a
registration agent: every interval the node puts `identity -> facts, classes,
agents, last seen`. The bucket's TTL (stream max age) drops a record nobody
refreshed, so a crashed node leaves the registry on its own; a clean stop
deletes the record at once. Clients can then discover without a broadcast
and know exactly whom to wait for (`nmc.client.registry`).

The registry is a discovery aid, never a reason for a node to fail: no
JetStream, a broker restart or a deleted bucket are logged as warnings and
retried after 1 s, then 2, 4, ... up to the interval. The first put is made
before the node subscribes its request subjects (nmc.services.node), so a
node that answers is listed, unless that put failed: it serves anyway and is
listed once a retry succeeds.

The bucket (`bucket_config`) refuses rollup headers and purges: a node may
write only its own key (broker permissions), and without this one put of its
own key with `Nats-Rollup: all` would wipe every other record. The operator
creates it (`nmc ops setup`); a node creates it only where the broker lets it
(no permissions), and never changes an existing one.

A record can still be overwritten by the broker itself: nats-server does not check
the reply subject of a JetStream API request or of a stream publish, so any user
may have the server post its JSON answer onto this node's key
(docs/security.md, "What the broker does not check"). The node therefore listens
on its own key and puts its record back when anything but its own write lands
there (`registry_record_overwritten`), at most `_REPAIRS_PER_SECOND` times a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from nmc import __version__
from nmc.protocol.registry import DEFAULT_BUCKET, RegistryEntry, bucket_subjects, check_bucket, registry_key_subject
from nmc.services.companion import NodeHandle
from nmc.transport.tasks import cancel_and_wait

__all__ = ["RegistryPublisher", "RegistrySettings", "bucket_config", "ensure_bucket"]

log = structlog.get_logger("nmc.registry")
# nats-server's error code for "replicas > 1 not supported in non-clustered mode".
_NOT_CLUSTERED = 10074
_DUPLICATE_WINDOW = 120.0  # nats-py's for a key-value bucket (never longer than the TTL)
_PUT_TIMEOUT = 2.0  # seconds a put or bucket lookup may wait for the stream's answer
_REPAIRS_PER_SECOND = 5  # re-puts after foreign writes: enough to win back a one-off, bounded under a flood
_RETRY_FIRST = 1.0  # seconds before the first retry of a failed put (then 2, 4, ... up to the interval)


def bucket_config(bucket: str = DEFAULT_BUCKET, ttl: float = 180.0, replicas: int = 1) -> StreamConfig:
    """The registry bucket's stream: a key-value bucket (history 1, `ttl` seconds) that refuses rollups and purges.

    What nats-py's create_key_value makes, except `allow_rollup_hdrs` (off), `deny_purge`
    (on) and per-message TTLs (off): nmc writes with put and delete only.
    """
    check_bucket(bucket)
    if not (math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"registry ttl must be a positive number of seconds, got {ttl!r}")
    if not 1 <= replicas <= 5:
        raise ValueError(f"registry replicas must be between 1 and 5, got {replicas!r}")
    return StreamConfig(name=f"KV_{bucket}", description="nmc registry: identity -> facts, classes, agents",
                        subjects=[bucket_subjects(bucket)], retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                        discard=DiscardPolicy.NEW, max_msgs_per_subject=1, max_age=ttl,
                        duplicate_window=min(_DUPLICATE_WINDOW, ttl), max_consumers=-1, max_msgs=-1, max_bytes=-1,
                        max_msg_size=-1, num_replicas=replicas, allow_rollup_hdrs=False, deny_delete=True,
                        deny_purge=True, allow_direct=False)


async def ensure_bucket(js: JetStreamContext, bucket: str = DEFAULT_BUCKET, ttl: float = 180.0, *, replicas: int = 1,
                        update: bool = True) -> StreamInfo:
    """Create the registry bucket if missing; with `update`, give an existing one `bucket_config`'s settings.

    An update keeps the records; it turns rollups off and purge protection on for a bucket made
    by an older nmc or by nats-py (which turn rollups on), and sets the TTL and replicas.
    Raises nats errors (APIError with the server's reason, timeouts) to the caller.
    """
    wanted = bucket_config(bucket, ttl, replicas)
    try:
        info = await js.stream_info(wanted.name or "")
    except NotFoundError:
        return await js.add_stream(wanted)
    current = info.config
    if update and (current.allow_rollup_hdrs or not current.deny_purge or not current.deny_delete
                   or current.max_age != wanted.max_age or (current.num_replicas or 1) != replicas):
        current.allow_rollup_hdrs, current.deny_purge, current.deny_delete = False, True, True
        current.max_age, current.num_replicas = wanted.max_age, replicas
        current.duplicate_window = min(current.duplicate_window or _DUPLICATE_WINDOW, ttl)
        info = await js.update_stream(current)
    return info


@dataclass(frozen=True)
class RegistrySettings:
    """Where a node registers and how often; `ttl` None means 3 x interval."""

    bucket: str = DEFAULT_BUCKET
    interval: float = 60.0  # seconds between puts (MCollective's registerinterval)
    ttl: float | None = None  # seconds a record lives without a refresh (the bucket's max age)
    replicas: int = 1  # JetStream servers keeping a bucket this node creates (plugin.nats.jetstream_replicas)

    def __post_init__(self) -> None:
        check_bucket(self.bucket)
        if not 1 <= self.replicas <= 5:
            raise ValueError(f"registry replicas must be between 1 and 5, got {self.replicas!r}")
        if not (math.isfinite(self.interval) and self.interval > 0):
            raise ValueError(f"registry interval must be a positive number of seconds, got {self.interval!r}")
        if self.ttl is not None and not (math.isfinite(self.ttl) and self.ttl > self.interval):
            # A TTL at or under the interval would expire live nodes between two refreshes.
            raise ValueError(f"registry ttl ({self.ttl!r} s) must be longer than the interval ({self.interval} s)")

    @property
    def record_ttl(self) -> float:
        """Seconds an unrefreshed record lives: `ttl`, or three missed intervals."""
        return self.ttl if self.ttl is not None else 3 * self.interval


class RegistryPublisher:
    """A node companion that keeps the node's registry record fresh, and removes it on a clean stop."""

    def __init__(self, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self._node: NodeHandle | None = None
        self._kv: KeyValue | None = None
        self._agents: tuple[str, ...] = ()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = log
        self._watch: Any = None  # core subscription to the node's own key (foreign writes)
        self._written: bytes | None = None  # the record last put, to tell its echo from a foreign write
        self._repairs: list[float] = []  # monotonic times of recent re-puts (rate limit)
        self._failures = 0  # failed puts in a row (a shorter wait before the next)
        self.puts = 0  # successful puts, for stats and tests
        self.overwrites = 0  # foreign writes seen on the node's own key

    async def start(self, node: NodeHandle) -> None:
        """Put the record once (so it is there when the node reports started), then refresh it in the background."""
        if self._task is not None:
            raise RuntimeError("RegistryPublisher is already running; use one per node")
        self._node = node
        self._agents = tuple(sorted(spec.name for spec in node.agent_specs()))
        self._log = log.bind(identity=node.identity, bucket=self.settings.bucket)
        await self._watch_own_key(node)
        await self._publish_safely("start")
        self._task = asyncio.create_task(self._refresh_loop(), name=f"nmc-registry {node.identity}")

    async def _watch_own_key(self, node: NodeHandle) -> None:
        """Hear every write to the node's own key, to put the record back after a foreign one."""
        if node.nc is None:
            return
        subject = registry_key_subject(self.settings.bucket, node.collective, node.identity)
        try:
            self._watch = await node.nc.subscribe(subject, cb=self._on_write)
        except Exception as exc:  # noqa: BLE001 - a broker without the permission: the refresh still runs
            self._log.warning("registry_watch_failed", error=str(exc) or type(exc).__name__)

    async def _on_write(self, msg: Any) -> None:
        """A write to the node's key: its own put or delete is expected, anything else is put right."""
        operation = (msg.headers or {}).get("KV-Operation")
        if operation is not None or msg.data == self._written:
            return  # the node's own delete (clean stop) or the echo of its own put
        self.overwrites += 1
        now = time.monotonic()
        self._repairs = [t for t in self._repairs if now - t < 1.0]
        if len(self._repairs) >= _REPAIRS_PER_SECOND:
            return  # a flood: the refresh puts it back within the interval anyway
        self._repairs.append(now)
        self._log.warning("registry_record_overwritten", size=len(msg.data), repairs=len(self._repairs),
                          hint="someone had the broker write onto this key (docs/security.md); putting it back")
        self._wake.set()

    async def facts_changed(self, node: NodeHandle) -> None:
        """Re-put at once, from the refresh task, so a slow broker never holds up a facts reload."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop refreshing and delete the record: a clean stop leaves the registry at once."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._watch is not None:
            with contextlib.suppress(Exception):  # a closed connection has no subscription left to remove
                await self._watch.unsubscribe()
            self._watch = None
        node, kv = self._node, self._kv
        if node is None or kv is None or node.nc is None or not node.nc.is_connected:
            return
        entry_key = RegistryEntry(identity=node.identity, collective=node.collective).key
        try:
            await kv.delete(entry_key)
        except Exception as exc:  # noqa: BLE001 - stopping must finish; the TTL removes the record anyway
            self._log.warning("registry_deregister_failed", error=str(exc) or type(exc).__name__)
            return
        self._log.debug("registry_deregistered")

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_wait())
            self._wake.clear()
            node = self._node
            if node is None or node.nc is None or node.nc.is_closed:
                # nats-py never reopens a closed connection: nothing left to refresh, the TTL takes over.
                self._log.info("registry_refresh_ended", reason="connection closed")
                return
            await self._publish_safely("refresh")

    def _next_wait(self) -> float:
        """The interval; after failed puts a shorter, doubling wait, so a node is listed again soon."""
        if not self._failures:
            return self.settings.interval
        return min(self.settings.interval, _RETRY_FIRST * 2 ** (self._failures - 1))

    async def _publish_safely(self, why: str) -> None:
        try:
            await self._publish()
        except Exception as exc:  # noqa: BLE001 - nats-py raises many types here; none may kill the node
            self._kv = None  # re-open (or re-create) the bucket next time: it may have been deleted
            self._failures += 1
            # The node serves meanwhile: registry-expecting clients do not wait for it until a put succeeds.
            self._log.warning("registry_put_failed", why=why, error=str(exc) or type(exc).__name__,
                              retry_in=self._next_wait())
        else:
            self._failures = 0

    async def _publish(self) -> None:
        node = self._node
        assert node is not None and node.nc is not None
        if self._kv is None:
            self._kv = await self._open(node.nc)
        snap = node.snapshot()
        entry = RegistryEntry(identity=node.identity, collective=node.collective, facts=snap.facts,
                              classes=tuple(snap.classes), agents=self._agents, last_seen=time.time(),
                              version=__version__, facts_version=snap.version)
        data = entry.to_bytes()
        self._written = data
        await self._kv.put(entry.key, data)
        self.puts += 1

    async def _open(self, nc: NATS) -> KeyValue:
        """The bucket, created if missing; another node creating it at the same moment is fine."""
        # A bounded wait: the node's own subscription to its key (see the module doc) means a put
        # into a deleted bucket gets no "no responders" status, only this timeout.
        js = nc.jetstream(timeout=min(_PUT_TIMEOUT, self.settings.interval))
        bucket, ttl, replicas = self.settings.bucket, self.settings.record_ttl, self.settings.replicas
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            try:
                # Same config from every node makes a concurrent create idempotent on the server. Where the
                # broker's permissions leave creating it to the operator (`nmc ops setup`), this fails, is
                # logged and retried on the next tick.
                await js.add_stream(bucket_config(bucket, ttl, replicas))
            except APIError as exc:
                if exc.err_code == _NOT_CLUSTERED:
                    raise RuntimeError(f"bucket {bucket}: {replicas} replicas need a JetStream cluster and this broker "
                                       f"is not clustered (plugin.nats.jetstream_replicas)") from exc
                # Lost a race against a node with other settings (e.g. another ttl): use its bucket.
                kv = await js.key_value(bucket)
            else:
                self._log.info("registry_bucket_created", ttl=ttl, replicas=replicas)
                return await js.key_value(bucket)
        status = await kv.status()
        have = status.stream_info.config.num_replicas or 1
        if have != replicas:
            # Never changed behind the operator's back: nodes use the bucket as it is.
            self._log.warning("registry_replicas_differ", bucket_replicas=have, replicas=replicas,
                              hint="nats stream edit KV_<bucket> --replicas N changes it in a cluster")
        bucket_ttl = status.ttl
        if bucket_ttl is not None and bucket_ttl <= self.settings.interval:
            self._log.warning("registry_ttl_too_short", bucket_ttl=bucket_ttl, interval=self.settings.interval,
                              hint="records expire between refreshes; recreate the bucket or lower registerinterval")
        return kv
