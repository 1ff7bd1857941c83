"""Lifecycle events (docs/protocol.md section 8): CloudEvents 1.0 in JSON, their bytes and back. Pure.

A node, the policy service and the audit service say what happened to them
(started, stopping, still alive, facts changed, a Puppet run ended, policies
re-read, an audit backlog) as a CloudEvent on
`nmc.events.<collective>.<kind>.<identity>` (nmc.protocol.subjects.event_subject):

    {"specversion": "1.0", "id": "<32 hex>", "source": "/nmc/<collective>/<role>/<identity>",
     "type": "io.nmc.node.startup.v1", "time": "2025-11-25T12:00:00.000Z",
     "datacontenttype": "application/json", "subject": "<identity>", "data": {...}}

`source` is a URI reference whose path segments are percent-encoded
(RFC 3986, every byte outside `A-Z a-z 0-9 - . _ ~`), so any identity fits.
The publisher signs the exact bytes (Nmc-Signature/Nmc-Certificate headers,
as audit records); whether an event is *genuine* is nmc.security.events'
question, not this module's. `decode_event` is strict: what it accepts is a
valid CloudEvent of a kind this version knows, with the data that kind has.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote

from nmc.protocol import codec
from nmc.protocol.codec import ErrorFactory, WireError

__all__ = ["CONTENT_TYPE", "EVENT_KINDS", "SPECVERSION", "CloudEvent", "EventError", "EventKind", "decode_event",
           "event_source", "kind_of_type", "new_event_id", "parse_source"]

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
_WHAT = "event"
_ID = re.compile(r"\A[0-9a-f]{32}\Z")
# RFC 3339 date-time (section 5.6), with the "T" and a zone; fromisoformat then checks the calendar.
_RFC3339 = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)\Z")
_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "datacontenttype", "subject", "data")


class EventError(WireError):
    """Bytes that are not a valid nmc lifecycle event; `reason` is one line."""


_NUMBER = (int, float)
_OPT_NUMBER = (int, float, type(None))


@dataclass(frozen=True)
class EventKind:
    """One kind of event: its subject token, its CloudEvents type, the role that may sign it, its data fields."""

    name: str  # the kind token of the subject
    type: str  # the CloudEvents `type`, versioned
    role: str  # the certificate role of whoever publishes it
    fields: Mapping[str, type | tuple[type, ...]] = field(default_factory=dict)  # required data fields


EVENT_KINDS: Mapping[str, EventKind] = {k.name: k for k in (
    EventKind("startup", "io.nmc.node.startup.v1", "node",
              {"version": str, "agents": list, "classes": list, "facts": dict, "facts_version": int}),
    EventKind("shutdown", "io.nmc.node.shutdown.v1", "node", {"reason": str, "uptime_s": _NUMBER}),
    EventKind("alive", "io.nmc.node.alive.v1", "node",
              {"uptime_s": _NUMBER, "interval_s": _NUMBER, "facts_version": int}),
    EventKind("facts_changed", "io.nmc.node.facts_changed.v1", "node",
              {"changed": list, "facts": dict, "facts_version": int}),
    EventKind("puppet_run", "io.nmc.node.puppet_run.v1", "node",
              {"status": str, "changed_resources": int, "failed_resources": int, "duration_s": _OPT_NUMBER}),
    EventKind("policy_reloaded", "io.nmc.policy.reloaded.v1", "policy", {"policies": int, "errors": list}),
    EventKind("audit_backlog", "io.nmc.audit.backlog.v1", "audit", {"pending": int, "threshold": int}),
)}
_BY_TYPE = {kind.type: kind for kind in EVENT_KINDS.values()}


def kind_of_type(event_type: str) -> EventKind | None:
    """The kind whose CloudEvents type is `event_type` (None: a type this version does not know)."""
    return _BY_TYPE.get(event_type)


def new_event_id() -> str:
    """128 random bits as 32 lower-case hex digits."""
    return secrets.token_hex(16)


def _segment(text: str) -> str:
    return quote(text, safe="")


def event_source(collective: str, role: str, identity: str) -> str:
    """`/nmc/<collective>/<role>/<identity>`, each segment percent-encoded: a CloudEvents `source` URI reference."""
    return f"/nmc/{_segment(collective)}/{_segment(role)}/{_segment(identity)}"


def parse_source(source: str, *, error: ErrorFactory = EventError) -> tuple[str, str, str]:
    """(collective, role, identity) of a source `event_source` made; `error` for anything else."""
    parts = source.split("/")
    if len(parts) != 5 or parts[:2] != ["", "nmc"] or not all(parts[2:]):
        raise error(f"event source {source[:80]!r} is not /nmc/<collective>/<role>/<identity>")
    decoded = []
    for part in parts[2:]:
        try:
            text = unquote(part, errors="strict")
        except UnicodeDecodeError:
            raise error(f"event source {source[:80]!r} is not UTF-8") from None
        if _segment(text) != part:
            raise error(f"event source {source[:80]!r} is not canonically percent-encoded")
        decoded.append(text)
    return decoded[0], decoded[1], decoded[2]


def _stamp(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class CloudEvent:
    """One lifecycle event as nmc makes and reads it (every CloudEvents 1.0 required attribute, and more)."""

    kind: str  # an EVENT_KINDS name
    collective: str
    identity: str
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = 0.0  # seconds since the epoch
    id: str = field(default_factory=new_event_id)
    time_text: str = ""  # the `time` attribute as read (decode_event); empty: made from `time`

    @property
    def event_kind(self) -> EventKind:
        """The kind's definition (KeyError for a kind this version does not know)."""
        return EVENT_KINDS[self.kind]

    @property
    def type(self) -> str:
        """The CloudEvents `type`, e.g. `io.nmc.node.startup.v1`."""
        return self.event_kind.type

    @property
    def role(self) -> str:
        """The certificate role that publishes this kind of event."""
        return self.event_kind.role

    @property
    def source(self) -> str:
        """The CloudEvents `source`."""
        return event_source(self.collective, self.role, self.identity)

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvents 1.0 JSON form (structured content mode)."""
        return {"specversion": SPECVERSION, "id": self.id, "source": self.source, "type": self.type,
                "time": self.time_text or _stamp(self.time), "datacontenttype": CONTENT_TYPE,
                "subject": self.identity, "data": dict(self.data)}

    def to_bytes(self) -> bytes:
        """The compact UTF-8 JSON the publisher signs and sends; ValueError for a non-finite number."""
        return codec.dumps(self.to_dict())


def _check_time(text: str, error: ErrorFactory) -> float:
    if not _RFC3339.match(text):
        raise error(f"event 'time' is not an RFC 3339 time: {text[:40]!r}")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise error(f"event 'time' is not an RFC 3339 time: {text[:40]!r}") from None


def _check_data(kind: EventKind, data: Mapping[str, Any], error: ErrorFactory) -> None:
    for name, kinds in kind.fields.items():
        if name not in data:
            raise error(f"{kind.name} event data has no {name!r}")
        value = data[name]
        if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise error(f"{kind.name} event data field {name!r} has the wrong type")
        if not isinstance(value, kinds):
            raise error(f"{kind.name} event data field {name!r} has the wrong type")
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise error(f"{kind.name} event data field {name!r} must be a list of text")


def decode_event(payload: bytes, *, error: ErrorFactory = EventError) -> CloudEvent:
    """A published event as a CloudEvent; `error(reason)` when it is not a valid CloudEvent of a known kind.

    Attributes beyond those of `CloudEvent.to_dict` (CloudEvents extensions) are dropped.
    """
    obj = codec.loads_object(payload, _WHAT, error=error)
    if obj.get("specversion") != SPECVERSION:
        raise error(f"event specversion is {obj.get('specversion')!r}, expected {SPECVERSION!r}")
    for name in ("id", "source", "type", "time", "subject"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise error(f"event attribute {name!r} is missing, empty or not text")
    if obj.get("datacontenttype") != CONTENT_TYPE:
        raise error(f"event datacontenttype is {obj.get('datacontenttype')!r}, expected {CONTENT_TYPE!r}")
    if not _ID.match(obj["id"]):
        raise error("event id must be 32 lower-case hex digits")
    kind = kind_of_type(obj["type"])
    if kind is None:
        raise error(f"event type {obj['type'][:80]!r} is not one this version of nmc knows")
    collective, role, identity = parse_source(obj["source"], error=error)
    if role != kind.role:
        raise error(f"a {kind.type} event comes from a {kind.role}, its source says {role!r}")
    if obj["subject"] != identity:
        raise error(f"event subject {obj['subject'][:80]!r} is not the identity of its source {identity[:80]!r}")
    when = _check_time(obj["time"], error)
    data = obj.get("data")
    if not isinstance(data, dict):
        raise error("event data is missing or not an object")
    _check_data(kind, data, error)
    return CloudEvent(kind=kind.name, collective=collective, identity=identity, data=data, time=when, id=obj["id"],
                      time_text=obj["time"])
