"""The audit record (PROTOCOL.md section 6): its schema, its bytes and back, and its one id formula. Pure.

It is wire contract like the envelopes: the node writes it, the audit
service, `nmc audit` and the spool read it back. It lives here, on the shared
strict codec (nmc.protocol.codec), so a record is as strictly read as a
request: strict UTF-8, finite numbers, no duplicate keys, every field of its
type; whatever decodes can be written to every sink unchanged. Whether a
record is *genuine* (signed by the node it names) is nmc.audit.verify's
question, not this module's.

Every record carries a random `nonce`, made with the record and kept with it
(in the spool too), and its id is `<identity>:<request id>:<phase>:<nonce>`.
JetStream de-duplicates by that id across the whole stream, so an id another
node could predict (v1's `<request id>:<identity>:<phase>`) let a node that
heard a request first publish a record under it and have the real one dropped;
and two runs of one request (after a restart) would have merged into one.
`record_id` is the one place either formula is written.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from nmc.protocol import codec
from nmc.protocol.codec import ErrorFactory, WireError
from nmc.protocol.subjects import encode_token

__all__ = ["AUDIT_PROTOCOL", "AUDIT_PROTOCOL_V1", "PHASES", "AuditRecord", "decode_record", "header_msg_id",
           "new_record_nonce", "record_id", "record_msg_id", "upgrade_record"]

# v2: signed by the node (Nmc-Signature/Nmc-Certificate headers), with a nonce in its id.
AUDIT_PROTOCOL = "nmc.audit.v2"
AUDIT_PROTOCOL_V1 = "nmc.audit.v1"  # unsigned, predictable ids: read back from old files, never accepted as genuine
PHASES = ("decision", "result")

_WHAT = "audit record"
_NONCE = re.compile(r"\A[0-9a-f]{32}\Z")
_HEADER_SAFE = re.compile(r"[!-~]*")  # printable ASCII without space (33-126): fit for a header value as it is
_TEXT = ("request_id", "caller", "sender", "identity", "collective", "agent", "action", "rule", "time")
# The order of PROTOCOL.md section 6; decode_record returns exactly these fields, in this order.
_FIELDS = ("protocol", "phase", "time", "request_id", "request_time", "caller", "sender", "identity", "collective",
           "agent", "action", "data", "allowed", "rule", "status", "duration_ms", "nonce")


def new_record_nonce() -> str:
    """128 random bits as 32 lower-case hex digits: nobody else can know a record's id before it is published."""
    return secrets.token_hex(16)


def record_id(identity: str, request_id: str, phase: str, nonce: str | None) -> str:
    """The record's de-duplication id: `<identity as a subject token>:<request id>:<phase>:<nonce>`.

    The identity is written as its subject token (no `:` in it), the phase and nonce
    never hold one: the id splits unambiguously whatever the request id contains.
    Without a nonce (an old `nmc.audit.v1` record) it is v1's `<request id>:<identity>:<phase>`.
    """
    if nonce:
        return f"{encode_token(identity)}:{request_id}:{phase}:{nonce}"
    return f"{request_id}:{identity}:{phase}"


def record_msg_id(record: Mapping[str, Any]) -> str:
    """The id (`record_id`) of a decoded record, v2 or v1."""
    nonce = record.get("nonce")
    nonce = nonce if isinstance(nonce, str) else None
    return record_id(record["identity"], record["request_id"], record["phase"], nonce)


def header_msg_id(msg_id: str) -> str:
    """The `Nats-Msg-Id` header value for `msg_id`.

    Request ids are any 1-128 characters; a header value must not hold
    spaces or control characters, so an id with any of those is sent as its
    SHA-256 instead (still the same for every resend, which is all the
    stream's de-duplication needs).
    """
    if _HEADER_SAFE.fullmatch(msg_id):
        return msg_id
    return "sha256:" + hashlib.sha256(msg_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditRecord:
    """One PROTOCOL.md section 6 record, as the node makes it."""

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
        stamp = datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="milliseconds")
        stamp = stamp.replace("+00:00", "Z")
        return {"protocol": AUDIT_PROTOCOL, "phase": self.phase, "time": stamp, "request_id": self.request_id,
                "request_time": self.request_time, "caller": self.caller, "sender": self.sender,
                "identity": self.identity, "collective": self.collective, "agent": self.agent,
                "action": self.action, "data": dict(self.data), "allowed": self.allowed, "rule": self.rule,
                "status": self.status, "duration_ms": self.duration_ms, "nonce": self.nonce}

    def to_bytes(self) -> bytes:
        """The record's JSON body as published to NMC_AUDIT (compact, UTF-8): the bytes the node signs.

        ValueError for a NaN or infinite number (a bug of the caller, not bad input).
        """
        return codec.dumps(self.to_dict())


def decode_record(payload: bytes, *, error: ErrorFactory = WireError) -> dict[str, Any]:
    """A published record (`nmc.audit.v2`, or an old `v1`) as a dict; `error(reason)` saying why it is not one.

    Fields outside the schema are dropped, so a sink writes nothing a record's
    author added beyond it. `error` is the caller's exception for "not a record"
    (nmc.audit passes its AuditRecordError).
    """
    obj = codec.loads_object(payload, _WHAT, error=error)
    protocol = obj.get("protocol")
    if protocol not in (AUDIT_PROTOCOL, AUDIT_PROTOCOL_V1):
        raise error(f"audit record protocol is {protocol!r}, expected {AUDIT_PROTOCOL!r}")
    if obj.get("phase") not in PHASES:
        raise error(f"audit record phase is {obj.get('phase')!r}, expected decision or result")
    for name in _TEXT:
        if not isinstance(obj.get(name), str):
            raise error(f"audit record field {name!r} is missing or not text")
    if not obj["request_id"] or len(obj["request_id"]) > 128 or not obj["identity"]:
        raise error("audit record 'request_id' must be 1-128 characters and 'identity' not empty")
    _check_time(obj["time"], error)
    _check_number(obj, "request_time", optional=False, error=error)
    _check_number(obj, "duration_ms", optional=True, error=error)
    status = obj.get("status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise error("audit record field 'status' must be an integer or null")
    if not isinstance(obj.get("allowed"), bool):
        raise error("audit record field 'allowed' must be true or false")
    if not isinstance(obj.get("data"), dict):
        raise error("audit record field 'data' is not an object")
    if protocol == AUDIT_PROTOCOL and not (isinstance(obj.get("nonce"), str) and _NONCE.match(obj["nonce"])):
        raise error("audit record field 'nonce' must be 32 lower-case hex digits")
    return {name: obj[name] for name in _FIELDS if name in obj and (name != "nonce" or protocol == AUDIT_PROTOCOL)}


def _check_time(text: str, error: ErrorFactory) -> None:
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise error(f"audit record 'time' is not an RFC 3339 time: {text[:40]!r}") from None
    if stamp.tzinfo is None:
        raise error("audit record 'time' has no time zone")


def _check_number(obj: Mapping[str, Any], name: str, *, optional: bool, error: ErrorFactory) -> None:
    value = obj.get(name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"audit record field {name!r} must be a number")
    # The codec's number check (finite, within float range), with this schema's wording.
    codec.number(obj, name, _WHAT, error=lambda _reason: error(f"audit record field {name!r} must be a finite number"))


def upgrade_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded v1 record as v2: same fields, `protocol` v2 and a fresh nonce (v2 records come back unchanged).

    For the spool of a node upgraded while it held records: they are sent
    (signed) as v2, since the audit service accepts nothing unsigned.
    """
    if record.get("protocol") == AUDIT_PROTOCOL:
        return dict(record)
    return {**record, "protocol": AUDIT_PROTOCOL, "nonce": new_record_nonce()}
