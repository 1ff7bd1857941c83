"""What the node's request path needs from auditing: the Auditor it calls, and NoAudit.

The pipeline records phase `decision` before an action runs (allowed or
not) and phase `result` when it ended (PROTOCOL.md section 6). The record
itself (AuditRecord, its bytes, its id) is wire contract: nmc.protocol.audit.
"""

from __future__ import annotations

from typing import Protocol

from nmc.errors import NmcError
from nmc.protocol.audit import AuditRecord

__all__ = ["AuditUnavailable", "Auditor", "NoAudit"]


class AuditUnavailable(NmcError):
    """Raised only when auditing is required and the record could not be kept anywhere."""


class Auditor(Protocol):
    """Keeps audit records durably."""

    async def record(self, record: AuditRecord) -> None:
        """Keep one record, or take charge of keeping it; AuditUnavailable only when required and impossible.

        Returning means the record was handed over: the pipeline sends a reply only after
        `record()` returned for its result record. An auditor may finish keeping it later
        (JetStreamAuditor tracks the stream's acknowledgement and spools the record when
        none comes), except a decision record that audit.required promises, which must be
        kept before this returns.
        """


class NoAudit:
    """Auditing switched off: records go nowhere."""

    async def record(self, record: AuditRecord) -> None:
        """Drop the record."""
