"""The JetStream stream `NMC_AUDIT` that every node's audit records go to.

File storage, subjects `nmc.audit.>`, a de-duplication window long enough
for a node to resend what it spooled while a publish timed out, and a
maximum age (`audit.max_age`) after which JetStream drops old records: the
audit service's files are the long-term copy. In a JetStream cluster it is
kept on `plugin.nats.jetstream_replicas` servers (3 survives losing one).
Rollup headers are refused and records cannot be purged or deleted one by
one: a node may write its own audit subject, and with `Nats-Rollup: all` one
record would otherwise wipe the stream.

The operator creates and configures it (`nmc audit setup`, `nmc ops setup`,
with a certificate of role `operator`); nodes and the audit service only look
it up, and create it only where the broker lets them (no permissions).
"""

from __future__ import annotations

import math

import structlog
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from nmc.audit.errors import AuditStreamError
from nmc.protocol.subjects import audit_subjects

__all__ = ["DEFAULT_MAX_AGE", "DUPLICATE_WINDOW", "STREAM", "STREAM_SUBJECTS", "ensure_stream", "replicas_reason",
           "stream_config"]

STREAM = "NMC_AUDIT"
STREAM_SUBJECTS = (audit_subjects(),)
DEFAULT_MAX_AGE = 30 * 86400.0
# Nodes resend spooled records with the same Nats-Msg-Id; within this window the stream drops the copy.
DUPLICATE_WINDOW = 300.0

# nats-server's error code for "replicas > 1 not supported in non-clustered mode".
_NOT_CLUSTERED = 10074

log = structlog.get_logger("nmc.audit")


def replicas_reason(exc: APIError, replicas: int) -> str:
    """The server's reason, with what to do when more replicas were asked of a server that is not clustered."""
    if exc.err_code == _NOT_CLUSTERED:
        return (f"{replicas} replicas need a JetStream cluster of at least {replicas} servers and this broker is not "
                f"clustered: set plugin.nats.jetstream_replicas = 1, or use a cluster (docs/clusters.md)")
    return str(exc.description or exc)


def stream_config(max_age: float = DEFAULT_MAX_AGE, replicas: int = 1) -> StreamConfig:
    """The NMC_AUDIT configuration; `max_age` in seconds, 0 keeps records forever; `replicas` servers keep it."""
    if not math.isfinite(max_age) or max_age < 0:
        raise ValueError(f"audit stream max age must be 0 (forever) or a positive number of seconds, got {max_age!r}")
    if not 1 <= replicas <= 5:
        raise ValueError(f"JetStream replicas must be between 1 and 5, got {replicas!r}")
    # The window cannot be longer than the age limit (the server refuses it).
    window = DUPLICATE_WINDOW if max_age == 0 else min(DUPLICATE_WINDOW, max_age)
    return StreamConfig(name=STREAM, description="nmc audit records (PROTOCOL.md section 6)",
                        subjects=list(STREAM_SUBJECTS), storage=StorageType.FILE, retention=RetentionPolicy.LIMITS,
                        discard=DiscardPolicy.OLD, max_age=max_age, duplicate_window=window, num_replicas=replicas,
                        allow_rollup_hdrs=False, deny_delete=True, deny_purge=True)


async def ensure_stream(js: JetStreamContext, max_age: float = DEFAULT_MAX_AGE, *, update: bool = True,
                        replicas: int = 1) -> StreamInfo:
    """Create NMC_AUDIT if missing; with `update` (the operator), give an existing one `stream_config`'s settings.

    An update sets the max age (and window), the replicas, its subjects and the protection
    against rollups, purges and deletes (a stream made by an older nmc lacks it). A clustered
    JetStream moves an existing stream to more (or fewer) replicas in place, records kept;
    without `update` (nodes, the audit service) an existing stream is used as it is.
    Raises AuditStreamError with the server's reason (no JetStream, no permission, ...).
    """
    wanted = stream_config(max_age, replicas)
    try:
        try:
            info = await js.stream_info(STREAM)
        except NotFoundError:
            info = await js.add_stream(wanted)
            log.info("audit_stream_created", stream=STREAM, max_age=max_age, replicas=replicas)
            return info
        current = info.config
        if update and (current.max_age != wanted.max_age or current.duplicate_window != wanted.duplicate_window
                       or (current.num_replicas or 1) != replicas or current.subjects != wanted.subjects
                       or current.allow_rollup_hdrs or not current.deny_delete or not current.deny_purge):
            current.max_age = wanted.max_age
            current.duplicate_window = wanted.duplicate_window
            current.num_replicas = replicas
            current.subjects = wanted.subjects  # only audit subjects: every user may read this stream
            current.allow_rollup_hdrs, current.deny_delete, current.deny_purge = False, True, True
            info = await js.update_stream(current)
            log.info("audit_stream_updated", stream=STREAM, max_age=max_age, replicas=replicas)
        return info
    except APIError as exc:
        raise AuditStreamError(f"stream {STREAM}: {replicas_reason(exc, replicas)}") from exc
    except Exception as exc:  # noqa: BLE001 - timeouts, no responders (no JetStream), closed connection
        raise AuditStreamError(f"stream {STREAM}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
