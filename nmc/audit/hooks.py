"""What the node's request path needs from auditing: a record and an Auditor.

The pipeline records phase `decision` before an action runs (allowed or
not) and phase `result` when it ended (PROTOCOL.md section 6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

__all__ = ["AUDIT_PROTOCOL", "AuditRecord", "AuditUnavailable", "Auditor", "NoAudit"]

AUDIT_PROTOCOL = "nmc.audit.v1"


class AuditUnavailable(Exception):
    """Raised only when auditing is required and the record could not be kept anywhere."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AuditRecord:
    """One PROTOCOL.md section 6 record."""

    phase: str  # decision | result
    request_id: str
    request_time: float
    caller: str
    sender: str
    identity: str
    collective: str
    agent: str
    action: str
    data: Mapping[str, Any] = field(default_factory=dict)
    allowed: bool = True
    rule: str = ""
    status: int | None = None
    duration_ms: float | None = None
    time: float = 0.0

    @property
    def msg_id(self) -> str:
        """The JetStream de-duplication id."""
        return f"{self.request_id}:{self.identity}:{self.phase}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form, field names as in PROTOCOL.md."""
        stamp = datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"protocol": AUDIT_PROTOCOL, "phase": self.phase, "time": stamp, "request_id": self.request_id,
                "request_time": self.request_time, "caller": self.caller, "sender": self.sender,
                "identity": self.identity, "collective": self.collective, "agent": self.agent,
                "action": self.action, "data": dict(self.data), "allowed": self.allowed, "rule": self.rule,
                "status": self.status, "duration_ms": self.duration_ms}


class Auditor(Protocol):
    """Keeps audit records durably."""

    async def record(self, record: AuditRecord) -> None:
        """Keep one record; raise AuditUnavailable only when required and impossible."""


class NoAudit:
    """Auditing switched off: records go nowhere."""

    async def record(self, record: AuditRecord) -> None:
        """Drop the record."""
