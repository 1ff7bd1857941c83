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
        """Keep one record; raise AuditUnavailable only when required and impossible."""


class NoAudit:
    """Auditing switched off: records go nowhere."""

    async def record(self, record: AuditRecord) -> None:
        """Drop the record."""
