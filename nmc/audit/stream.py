"""The JetStream stream `NMC_AUDIT` that every node's audit records go to.

File storage, subjects `nmc.audit.>`, a de-duplication window long enough
for a node to resend what it spooled while a publish timed out, and a
maximum age (`audit.max_age`) after which JetStream drops old records: the
audit service's files are the long-term copy.
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
from nmc.protocol.subjects import PREFIX

__all__ = ["DEFAULT_MAX_AGE", "DUPLICATE_WINDOW", "STREAM", "STREAM_SUBJECTS", "ensure_stream", "stream_config"]

STREAM = "NMC_AUDIT"
STREAM_SUBJECTS = (f"{PREFIX}.audit.>",)
DEFAULT_MAX_AGE = 30 * 86400.0
# Nodes resend spooled records with the same Nats-Msg-Id; within this window the stream drops the copy.
DUPLICATE_WINDOW = 300.0

log = structlog.get_logger("nmc.audit")


def stream_config(max_age: float = DEFAULT_MAX_AGE) -> StreamConfig:
    """The NMC_AUDIT configuration; `max_age` in seconds, 0 keeps records forever."""
    if not math.isfinite(max_age) or max_age < 0:
        raise ValueError(f"audit stream max age must be 0 (forever) or a positive number of seconds, got {max_age!r}")
    # The window cannot be longer than the age limit (the server refuses it).
    window = DUPLICATE_WINDOW if max_age == 0 else min(DUPLICATE_WINDOW, max_age)
    return StreamConfig(name=STREAM, description="nmc audit records (PROTOCOL.md section 6)",
                        subjects=list(STREAM_SUBJECTS), storage=StorageType.FILE, retention=RetentionPolicy.LIMITS,
                        discard=DiscardPolicy.OLD, max_age=max_age, duplicate_window=window)


async def ensure_stream(js: JetStreamContext, max_age: float = DEFAULT_MAX_AGE, *, update: bool = True) -> StreamInfo:
    """Create NMC_AUDIT if missing; with `update`, set its max age (and window) when they differ.

    Raises AuditStreamError with the server's reason (no JetStream, no permission, ...).
    """
    wanted = stream_config(max_age)
    try:
        try:
            info = await js.stream_info(STREAM)
        except NotFoundError:
            info = await js.add_stream(wanted)
            log.info("audit_stream_created", stream=STREAM, max_age=max_age)
            return info
        current = info.config
        if update and (current.max_age != wanted.max_age or current.duplicate_window != wanted.duplicate_window):
            current.max_age = wanted.max_age
            current.duplicate_window = wanted.duplicate_window
            info = await js.update_stream(current)
            log.info("audit_stream_updated", stream=STREAM, max_age=max_age)
        return info
    except APIError as exc:
        raise AuditStreamError(f"stream {STREAM}: {exc.description or exc}") from exc
    except Exception as exc:  # noqa: BLE001 - timeouts, no responders (no JetStream), closed connection
        raise AuditStreamError(f"stream {STREAM}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
