"""The operator's JetStream step: the audit, jobs and events streams and the registry bucket, made before any daemon.

No running daemon may create or change a stream (nmc.security.permissions,
rule 3): a node or service key could otherwise make the audit stream, which
every user may read, capture requests, or turn rollups back on. The operator
runs this once per fleet (and again to change a setting) with a certificate
of role `operator`: `nmc ops setup` does both, `nmc audit setup` the audit
stream alone; `nmc dev up`, `nmc ops simulate` and the tests run it with the
fleet's `nmc-operator` certificate before the first daemon starts.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import nats.errors
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from nmc.errors import OpsError
from nmc.audit.errors import AuditStreamError
from nmc.audit.stream import DEFAULT_MAX_AGE, ensure_stream, replicas_reason
from nmc.ops.config.files import Config
from nmc.ops.config.settings import client_servers, connect_timeout, jetstream_replicas, tls_context
from nmc.protocol.jobs import JOBS_STREAM, jobs_subjects
from nmc.protocol.registry import DEFAULT_BUCKET, check_bucket
from nmc.protocol.subjects import event_subjects
from nmc.security.permissions import EVENTS_STREAM
from nmc.security.names import inbox_prefix, tls_identity
from nmc.services.registry import ensure_bucket
from nmc.transport import ConnectError, connect

__all__ = ["DEFAULT_EVENTS_MAX_AGE", "DEFAULT_EVENTS_MAX_BYTES", "DEFAULT_JOBS_MAX_AGE", "DEFAULT_JOBS_MAX_BYTES", "DEFAULT_REGISTRY_TTL", "JetStreamSetup", "SetupError", "SetupResult", "setup_as", "setup_audit_stream",
           "events_stream_config", "jobs_stream_config", "setup_jetstream"]

DEFAULT_REGISTRY_TTL = 180.0  # three missed refreshes at the nodes' default registerinterval (60 s)
DEFAULT_JOBS_MAX_AGE = 7 * 86400.0  # a week of jobs, as Salt's job cache keeps 24 h by default and more on demand
DEFAULT_JOBS_MAX_BYTES = 1024 ** 3  # 1 GiB
DEFAULT_EVENTS_MAX_AGE = 7 * 86400.0  # a week of lifecycle events
DEFAULT_EVENTS_MAX_BYTES = 256 * 1024 ** 2  # 256 MiB
# A refused publish gets no answer, only a timeout: say what usually causes it.
_NO_ANSWER = "no answer from JetStream (is it enabled, and does this certificate have role `operator`?)"


class SetupError(OpsError):
    """A stream could not be created or configured; `reason` is one line and names it."""


@dataclass(frozen=True)
class JetStreamSetup:
    """What the operator asks for: the audit stream's max age, the registry bucket and its TTL, the replicas."""

    audit_max_age: float = DEFAULT_MAX_AGE  # seconds; 0 keeps records forever
    registry_bucket: str = DEFAULT_BUCKET
    registry_ttl: float = DEFAULT_REGISTRY_TTL
    replicas: int = 1
    jobs_max_age: float = DEFAULT_JOBS_MAX_AGE  # seconds a job (its records and replies) is kept
    jobs_max_bytes: int = DEFAULT_JOBS_MAX_BYTES  # the stream's size cap: the oldest jobs go first
    events_max_age: float = DEFAULT_EVENTS_MAX_AGE  # seconds NMC_EVENTS keeps lifecycle events
    events_max_bytes: int = DEFAULT_EVENTS_MAX_BYTES  # NMC_EVENTS's size cap: the oldest events go first

    def __post_init__(self) -> None:
        check_bucket(self.registry_bucket)
        if not (math.isfinite(self.jobs_max_age) and self.jobs_max_age > 0):
            raise ValueError(f"jobs max age must be a positive number of seconds, got {self.jobs_max_age!r}")
        if self.jobs_max_bytes < 1024 * 1024:
            raise ValueError(f"jobs max bytes must be at least 1 MiB, got {self.jobs_max_bytes!r}")
        if not (math.isfinite(self.events_max_age) and self.events_max_age > 0):
            raise ValueError(f"events max age must be a positive number of seconds, got {self.events_max_age!r}")
        if self.events_max_bytes < 1024 * 1024:
            raise ValueError(f"events max bytes must be at least 1 MiB, got {self.events_max_bytes!r}")
        if not (math.isfinite(self.registry_ttl) and self.registry_ttl > 0):
            raise ValueError(f"registry ttl must be a positive number of seconds, got {self.registry_ttl!r}")
        if not 1 <= self.replicas <= 5:
            raise ValueError(f"JetStream replicas must be between 1 and 5, got {self.replicas!r}")

    @classmethod
    def from_config(cls, config: Config, **given: float | str | None) -> JetStreamSetup:
        """The replicas and bucket of the operator's config (plugin.nats.jetstream_replicas, plugin.registry.bucket)."""
        values = {k: v for k, v in given.items() if v is not None}
        bucket = config.get("plugin.registry.bucket") or DEFAULT_BUCKET
        return cls(registry_bucket=bucket, replicas=jetstream_replicas(config), **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SetupResult:
    """The streams and the bucket as the broker has them after the setup."""

    audit: StreamInfo
    registry: StreamInfo
    jobs: StreamInfo | None = None
    events: StreamInfo | None = None


async def setup_audit_stream(js: JetStreamContext, max_age: float = DEFAULT_MAX_AGE, replicas: int = 1) -> StreamInfo:
    """Create, or give its settings to, NMC_AUDIT (SetupError with the reason: `nmc audit setup`)."""
    try:
        return await ensure_stream(js, max_age, replicas=replicas)
    except AuditStreamError as exc:
        if isinstance(exc.__cause__, (nats.errors.TimeoutError, TimeoutError)):
            raise SetupError(f"stream NMC_AUDIT: {_NO_ANSWER}") from exc
        raise SetupError(exc.reason) from exc


async def setup_jetstream(js: JetStreamContext, setup: JetStreamSetup = JetStreamSetup()) -> SetupResult:
    """Create, or give their settings to, NMC_AUDIT and the registry bucket (SetupError with the reason)."""
    audit = await setup_audit_stream(js, setup.audit_max_age, setup.replicas)
    with _setup_errors(f"bucket {setup.registry_bucket}", setup.replicas):
        registry = await ensure_bucket(js, setup.registry_bucket, setup.registry_ttl, replicas=setup.replicas)
    jobs = await _ensure(js, jobs_stream_config(setup.jobs_max_age, setup.jobs_max_bytes, setup.replicas),
                         setup.replicas)
    events = await _ensure(js, events_stream_config(setup.events_max_age, setup.events_max_bytes, setup.replicas),
                           setup.replicas)
    return SetupResult(audit=audit, registry=registry, jobs=jobs, events=events)


def events_stream_config(max_age: float = DEFAULT_EVENTS_MAX_AGE, max_bytes: int = DEFAULT_EVENTS_MAX_BYTES,
                         replicas: int = 1) -> StreamConfig:
    """NMC_EVENTS (docs/events.md): every lifecycle event, kept `max_age` seconds and `max_bytes` at most.

    Read by message (`STREAM.MSG.GET`, no direct get, no consumers: nmc.security.permissions,
    rule 2); the oldest events go first when it is full; never rolled up, purged or deleted from.
    """
    return StreamConfig(name=EVENTS_STREAM, description="nmc lifecycle events (CloudEvents 1.0, signed)",
                        subjects=[event_subjects()], retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                        discard=DiscardPolicy.OLD, max_age=max_age, max_bytes=max_bytes, max_msgs=-1,
                        max_msgs_per_subject=-1, max_consumers=-1, max_msg_size=-1, num_replicas=replicas,
                        duplicate_window=min(120.0, max_age), allow_direct=False, allow_rollup_hdrs=False,
                        deny_delete=True, deny_purge=True)


def jobs_stream_config(max_age: float = DEFAULT_JOBS_MAX_AGE, max_bytes: int = DEFAULT_JOBS_MAX_BYTES,
                       replicas: int = 1) -> StreamConfig:
    """NMC_JOBS (nmc.protocol.jobs): one message per subject, read by direct get, never rolled up or purged.

    `allow_direct` is what lets a reader fetch a subject's message with the subject in the
    API subject (`$JS.API.DIRECT.GET.NMC_JOBS.<subject>`), the one read the broker can
    restrict per caller. Discarding the oldest when full keeps new jobs recordable.
    """
    return StreamConfig(name=JOBS_STREAM, description="nmc jobs: start and end records, and the nodes' signed replies",
                        subjects=[jobs_subjects()], retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                        discard=DiscardPolicy.OLD, max_age=max_age, max_bytes=max_bytes, max_msgs_per_subject=1,
                        max_msgs=-1, max_consumers=-1, max_msg_size=-1, num_replicas=replicas,
                        duplicate_window=min(120.0, max_age), allow_direct=True, allow_rollup_hdrs=False,
                        deny_delete=True, deny_purge=True)


async def _ensure(js: JetStreamContext, wanted: StreamConfig, replicas: int) -> StreamInfo:
    """Create `wanted`, or give an existing stream its settings (SetupError naming the stream)."""
    with _setup_errors(f"stream {wanted.name}", replicas):
        try:
            await js.stream_info(wanted.name or "")
        except NotFoundError:
            return await js.add_stream(wanted)
        return await js.update_stream(wanted)


@contextlib.contextmanager
def _setup_errors(what: str, replicas: int) -> Iterator[None]:
    """Any failure of the JetStream calls inside as one SetupError line naming `what`."""
    try:
        yield
    except APIError as exc:
        raise SetupError(f"{what}: {replicas_reason(exc, replicas)}") from exc
    except (nats.errors.TimeoutError, TimeoutError) as exc:
        raise SetupError(f"{what}: {_NO_ANSWER}") from exc
    except Exception as exc:  # noqa: BLE001 - no responders (no JetStream), closed connection
        raise SetupError(f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc


async def setup_as(config: Config, setup: JetStreamSetup | None = None, *,
                   give_up_after: float | None = None) -> SetupResult:
    """Connect with `config`'s certificate (an operator's), run `setup_jetstream`, disconnect.

    `setup` defaults to the config's replicas and bucket; the first connection is retried
    until `give_up_after` seconds (the config's connect timeout when None). SetupError on failure.
    """
    layout = setup or JetStreamSetup.from_config(config)
    tls = tls_context(config)
    servers = client_servers(config)
    options: dict[str, object] = {"servers": list(servers), "name": "nmc setup", "tls": tls,
                                  "connect_timeout": connect_timeout(config), "allow_reconnect": True,
                                  "max_reconnect_attempts": 1, "reconnect_time_wait": 0.25}
    owner = tls_identity(tls)
    if owner:
        options["inbox_prefix"] = inbox_prefix(owner)  # the only inbox the broker lets it read
    try:
        nc = await connect(options, give_up_after=connect_timeout(config) if give_up_after is None else give_up_after)
    except ConnectError as exc:
        raise SetupError(f"cannot connect to NATS at {', '.join(servers)}: {exc.reason}") from exc
    try:
        return await setup_jetstream(nc.jetstream(), layout)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
