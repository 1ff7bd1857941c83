"""Audit records as bytes and back, de-duplication ids and input redaction. Pure.

The node encodes an AuditRecord once (`encode_record`); the audit service and
`nmc audit` decode it (`decode_record`) into the plain dict of PROTOCOL.md
section 6 and never need the dataclass again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from nmc.audit.errors import AuditRecordError
from nmc.audit.hooks import AUDIT_PROTOCOL, AuditRecord
from nmc.protocol.ddl import ActionSpec

__all__ = ["PHASES", "REDACTED", "decode_record", "encode_record", "header_msg_id", "record_msg_id", "redact_inputs"]

PHASES = ("decision", "result")
REDACTED = "***"
_REQUIRED_TEXT = ("request_id", "identity", "collective", "agent", "action", "caller", "time")


def encode_record(record: AuditRecord) -> bytes:
    """The record's JSON body as published to NMC_AUDIT (compact, UTF-8)."""
    return json.dumps(record.to_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_record(payload: bytes) -> dict[str, Any]:
    """A published record as a dict; AuditRecordError when it is not one."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AuditRecordError(f"audit record is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise AuditRecordError("audit record is not a JSON object")
    if obj.get("protocol") != AUDIT_PROTOCOL:
        raise AuditRecordError(f"audit record protocol is {obj.get('protocol')!r}, expected {AUDIT_PROTOCOL!r}")
    if obj.get("phase") not in PHASES:
        raise AuditRecordError(f"audit record phase is {obj.get('phase')!r}, expected decision or result")
    for name in _REQUIRED_TEXT:
        if not isinstance(obj.get(name), str) or (name in ("request_id", "identity") and not obj[name]):
            raise AuditRecordError(f"audit record field {name!r} is missing or not text")
    if not isinstance(obj.get("data", {}), dict):
        raise AuditRecordError("audit record field 'data' is not an object")
    return obj


def record_msg_id(record: Mapping[str, Any]) -> str:
    """`<request id>:<identity>:<phase>` of a decoded record: what makes it unique."""
    return f"{record['request_id']}:{record['identity']}:{record['phase']}"


def header_msg_id(msg_id: str) -> str:
    """The `Nats-Msg-Id` header value for `msg_id`.

    Request ids are any 1-128 characters; a header value must not hold
    spaces or control characters, so an id with any of those is sent as its
    SHA-256 instead (still the same for every resend, which is all the
    stream's de-duplication needs).
    """
    if msg_id.isascii() and all(33 <= ord(c) <= 126 for c in msg_id):
        return msg_id
    return "sha256:" + hashlib.sha256(msg_id.encode("utf-8")).hexdigest()


def redact_inputs(spec: ActionSpec | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with every input the action's DDL marks `sensitive` replaced by "***".

    Unknown actions (no spec) and undeclared inputs are kept as sent: only the
    DDL can say what is secret, and the request is refused anyway when the
    action does not exist.
    """
    out = dict(data)
    if spec is None:
        return out
    for inp in spec.inputs:
        if getattr(inp, "sensitive", False) and inp.name in out:
            out[inp.name] = REDACTED
    return out
