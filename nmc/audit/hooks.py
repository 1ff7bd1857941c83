"""What the node's request path needs from auditing: a record and an Auditor.

The pipeline records phase `decision` before an action runs (allowed or
not) and phase `result` when it ended (PROTOCOL.md section 6).

Every record carries a random `nonce`, made with the record and kept with it
(in the spool too), and its id is `<identity>:<request id>:<phase>:<nonce>`.
JetStream de-duplicates by that id across the whole stream, so an id another
node could predict (v1's `<request id>:<identity>:<phase>`) let a node that
heard a request first publish a record under it and have the real one dropped;
and two runs of one request (after a restart) would have merged into one.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from nmc.protocol.subjects import encode_token

__all__ = ["AUDIT_PROTOCOL", "AUDIT_PROTOCOL_V1", "AuditRecord", "AuditUnavailable", "Auditor", "NoAudit",
           "new_record_nonce", "record_id"]

# v2: signed by the node (Nmc-Signature/Nmc-Certificate headers), with a nonce in its id.
AUDIT_PROTOCOL = "nmc.audit.v2"
AUDIT_PROTOCOL_V1 = "nmc.audit.v1"  # unsigned, predictable ids: read back from old files, never accepted as genuine


def new_record_nonce() -> str:
    """128 random bits as 32 lower-case hex digits: nobody else can know a record's id before it is published."""
    return secrets.token_hex(16)


def record_id(identity: str, request_id: str, phase: str, nonce: str) -> str:
    """`<identity as a subject token>:<request id>:<phase>:<nonce>`: unique per record, unguessable, one way to read.

    The identity is written as its subject token (no `:` in it), the phase and nonce
    never hold one: the id splits unambiguously whatever the request id contains.
    """
    return f"{encode_token(identity)}:{request_id}:{phase}:{nonce}"


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
    nonce: str = field(default_factory=new_record_nonce)

    @property
    def msg_id(self) -> str:
        """The JetStream de-duplication id (`record_id`), also the audit service's."""
        return record_id(self.identity, self.request_id, self.phase, self.nonce)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, field names as in PROTOCOL.md."""
        stamp = datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"protocol": AUDIT_PROTOCOL, "phase": self.phase, "time": stamp, "request_id": self.request_id,
                "request_time": self.request_time, "caller": self.caller, "sender": self.sender,
                "identity": self.identity, "collective": self.collective, "agent": self.agent,
                "action": self.action, "data": dict(self.data), "allowed": self.allowed, "rule": self.rule,
                "status": self.status, "duration_ms": self.duration_ms, "nonce": self.nonce}


class Auditor(Protocol):
    """Keeps audit records durably."""

    async def record(self, record: AuditRecord) -> None:
        """Keep one record; raise AuditUnavailable only when required and impossible."""


class NoAudit:
    """Auditing switched off: records go nowhere."""

    async def record(self, record: AuditRecord) -> None:
        """Drop the record."""
