"""Audit records as bytes and back, de-duplication ids and input redaction. Pure.

The node encodes an AuditRecord once (`encode_record`); the audit service and
`nmc audit` decode it (`decode_record`) into the plain dict of PROTOCOL.md
section 6 and never need the dataclass again. Decoding is as strict as the
request envelope's (nmc.protocol.strictjson): strict UTF-8, finite numbers,
every field of its type, so whatever is decoded can be written to every sink
unchanged. Whether a decoded record is *genuine* (signed by the node it
names) is nmc.audit.verify's question, not this module's.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from nmc.audit.errors import AuditRecordError
from nmc.audit.hooks import AUDIT_PROTOCOL, AUDIT_PROTOCOL_V1, AuditRecord, new_record_nonce, record_id
from nmc.protocol.ddl import ActionSpec
from nmc.protocol.strictjson import StrictJsonError, dumps_compact, loads_object

__all__ = ["PHASES", "REDACTED", "decode_record", "encode_record", "header_msg_id", "record_msg_id", "redact_inputs",
           "upgrade_record"]

PHASES = ("decision", "result")
REDACTED = "***"
_NONCE = re.compile(r"\A[0-9a-f]{32}\Z")
_TEXT = ("request_id", "caller", "sender", "identity", "collective", "agent", "action", "rule", "time")
# The order of PROTOCOL.md section 6; decode_record returns exactly these fields, in this order.
_FIELDS = ("protocol", "phase", "time", "request_id", "request_time", "caller", "sender", "identity", "collective",
           "agent", "action", "data", "allowed", "rule", "status", "duration_ms", "nonce")


def encode_record(record: AuditRecord) -> bytes:
    """The record's JSON body as published to NMC_AUDIT (compact, UTF-8): the bytes the node signs."""
    try:
        return dumps_compact(record.to_dict())
    except ValueError as exc:  # NaN in a duration: a bug of the caller, not bad input
        raise AuditRecordError(f"audit record cannot be encoded: {exc}") from exc


def decode_record(payload: bytes) -> dict[str, Any]:
    """A published record (`nmc.audit.v2`, or an old `v1`) as a dict; AuditRecordError saying why it is not one.

    Fields outside the schema are dropped, so a sink writes nothing a record's
    author added beyond it.
    """
    try:
        obj = loads_object(payload, "audit record")
    except StrictJsonError as exc:
        raise AuditRecordError(exc.reason) from None
    protocol = obj.get("protocol")
    if protocol not in (AUDIT_PROTOCOL, AUDIT_PROTOCOL_V1):
        raise AuditRecordError(f"audit record protocol is {protocol!r}, expected {AUDIT_PROTOCOL!r}")
    if obj.get("phase") not in PHASES:
        raise AuditRecordError(f"audit record phase is {obj.get('phase')!r}, expected decision or result")
    for name in _TEXT:
        if not isinstance(obj.get(name), str):
            raise AuditRecordError(f"audit record field {name!r} is missing or not text")
    if not obj["request_id"] or len(obj["request_id"]) > 128 or not obj["identity"]:
        raise AuditRecordError("audit record 'request_id' must be 1-128 characters and 'identity' not empty")
    _check_time(obj["time"])
    _number(obj, "request_time", optional=False)
    _number(obj, "duration_ms", optional=True)
    status = obj.get("status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise AuditRecordError("audit record field 'status' must be an integer or null")
    if not isinstance(obj.get("allowed"), bool):
        raise AuditRecordError("audit record field 'allowed' must be true or false")
    if not isinstance(obj.get("data"), dict):
        raise AuditRecordError("audit record field 'data' is not an object")
    if protocol == AUDIT_PROTOCOL and not (isinstance(obj.get("nonce"), str) and _NONCE.match(obj["nonce"])):
        raise AuditRecordError("audit record field 'nonce' must be 32 lower-case hex digits")
    return {name: obj[name] for name in _FIELDS if name in obj and (name != "nonce" or protocol == AUDIT_PROTOCOL)}


def _check_time(text: str) -> None:
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AuditRecordError(f"audit record 'time' is not an RFC 3339 time: {text[:40]!r}") from None
    if stamp.tzinfo is None:
        raise AuditRecordError("audit record 'time' has no time zone")


def _number(obj: Mapping[str, Any], name: str, *, optional: bool) -> None:
    value = obj.get(name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuditRecordError(f"audit record field {name!r} must be a number")
    try:
        finite = math.isfinite(float(value))
    except OverflowError:
        finite = False
    if not finite:
        raise AuditRecordError(f"audit record field {name!r} must be a finite number")


def record_msg_id(record: Mapping[str, Any]) -> str:
    """The id of a decoded record: `record_id(...)` with its nonce; an old v1 record's `<request id>:<identity>:<phase>`."""
    nonce = record.get("nonce")
    if isinstance(nonce, str) and nonce:
        return record_id(record["identity"], record["request_id"], record["phase"], nonce)
    return f"{record['request_id']}:{record['identity']}:{record['phase']}"


def upgrade_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded v1 record as v2: same fields, `protocol` v2 and a fresh nonce (v2 records come back unchanged).

    For the spool of a node upgraded while it held records: they are sent
    (signed) as v2, since the audit service accepts nothing unsigned.
    """
    if record.get("protocol") == AUDIT_PROTOCOL:
        return dict(record)
    return {**record, "protocol": AUDIT_PROTOCOL, "nonce": new_record_nonce()}


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
