"""Request and reply envelopes (PROTOCOL.md sections 3 and 4): JSON bytes <-> frozen values.

Parsing is strict and total: any bytes either become an envelope or raise
EnvelopeError with a one-line reason, so a node can answer "Invalid data"
instead of dying on a malformed message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping

from nmc.protocol import codec
from nmc.protocol.codec import WireError
from nmc.protocol.jobs import JobError, check_job_id
from nmc.protocol.status import Status

__all__ = [
    "REPLY_PROTOCOL",
    "REQUEST_PROTOCOL",
    "REQUEST_PROTOCOL_V1",
    "EnvelopeError",
    "OutdatedRequestError",
    "Reply",
    "Request",
    "new_request_id",
]

# v2 added `targets`: a request says where it may run, so a copy re-published on another
# subject runs nowhere else (docs/protocol.md section 3, "Versions").
REQUEST_PROTOCOL = "nmc.request.v2"
REQUEST_PROTOCOL_V1 = "nmc.request.v1"
REPLY_PROTOCOL = "nmc.reply.v1"


class EnvelopeError(WireError):
    """Bytes that are not a valid envelope; `reason` is one line fit for a reply."""


class OutdatedRequestError(EnvelopeError):
    """A request of an older protocol version; `request_id` (or "") so the refusal reaches its client."""

    def __init__(self, reason: str, request_id: str) -> None:
        super().__init__(reason)
        self.request_id = request_id


def new_request_id() -> str:
    """A fresh request id: random, so replay caches never collide across clients."""
    return uuid.uuid4().hex


# Every envelope reader raises EnvelopeError (the pipeline answers it as "Invalid data").
_field = partial(codec.field, error=EnvelopeError)
_number = partial(codec.number, error=EnvelopeError)


def _dumps_list(items: list[str]) -> bytes:
    return json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


_V1_REFUSED = (f"{REQUEST_PROTOCOL_V1} is no longer accepted: it does not say where it may run; "
               "upgrade the client")


def _targets(obj: Mapping[str, Any]) -> tuple[str, ...] | None:
    value = obj.get("targets")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise EnvelopeError("request field 'targets' must be a non-empty list of identities")
    if not all(isinstance(name, str) and name for name in value):
        raise EnvelopeError("request field 'targets' must hold only non-empty strings")
    return tuple(value)


def _job(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("job")
    if value is None:
        return None
    try:
        return check_job_id(value)
    except JobError:
        raise EnvelopeError("request field 'job' must be a job id (1-64 letters, digits, '_' or '-')") from None


@dataclass(frozen=True)
class Request:
    """A signed request as it travels: what to run, where, by whom, until when.

    `targets` None: the request runs on every node its filter matches, and only when it came
    on a broadcast, fact or class subject. Otherwise it runs only on the nodes it names
    (whatever subject it came on), where its filter matches too. Both are signed, so a copy
    re-published elsewhere cannot widen either.
    """

    id: str
    collective: str
    agent: str
    action: str
    caller: str
    sender: str
    time: float
    ttl: float
    data: Mapping[str, Any] = field(default_factory=dict)
    filter: str = ""
    targets: tuple[str, ...] | None = None
    # The job this request belongs to (nmc.protocol.jobs): the node also stores its signed reply in
    # NMC_JOBS under that id. Absent (None) from the bytes when not a job, so older nodes read it too.
    job: str | None = None

    def to_bytes(self) -> bytes:
        """The exact body bytes that get signed."""
        obj: dict[str, Any] = {
            "protocol": REQUEST_PROTOCOL, "id": self.id, "collective": self.collective,
            "agent": self.agent, "action": self.action, "data": dict(self.data),
            "filter": self.filter, "caller": self.caller, "sender": self.sender,
            "time": self.time, "ttl": self.ttl,
        }
        if self.job is not None:
            obj["job"] = self.job
        if self.targets is not None:
            obj["targets"] = list(self.targets)
        return codec.dumps(obj)

    def bodies_for_each(self, identities: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """``(identity, body)`` for this request with ``targets = [identity]``, for each identity.

        The same bytes as ``replace(self, targets=(identity,)).to_bytes()``, but the shared part
        (data can be large) is encoded once: direct addressing signs one body per node.
        """
        shared = dataclasses.replace(self, targets=None).to_bytes()
        assert shared.endswith(b"}")
        head = shared[:-1] + b',"targets":'
        for name in identities:
            yield name, head + _dumps_list([name]) + b"}"

    @classmethod
    def from_bytes(cls, body: bytes) -> Request:
        """Parse and shape-check a request body (OutdatedRequestError for a v1 request)."""
        obj = codec.loads_object(body, "request", error=EnvelopeError)
        protocol = obj.get("protocol")
        if protocol == REQUEST_PROTOCOL_V1:
            # Say why, with its id when it has one, so an old client shows this instead of "no response".
            rid = obj.get("id")
            raise OutdatedRequestError(_V1_REFUSED, rid if isinstance(rid, str) and 0 < len(rid) <= 128 else "")
        if protocol != REQUEST_PROTOCOL:
            raise EnvelopeError(f"request protocol must be {REQUEST_PROTOCOL!r}, got {protocol!r}")
        w = "request"
        req = cls(
            id=_field(obj, "id", str, w), collective=_field(obj, "collective", str, w),
            agent=_field(obj, "agent", str, w), action=_field(obj, "action", str, w),
            caller=_field(obj, "caller", str, w), sender=_field(obj, "sender", str, w),
            time=_number(obj, "time", w), ttl=_number(obj, "ttl", w),
            data=_field(obj, "data", dict, w), filter=_field(obj, "filter", str, w),
            targets=_targets(obj), job=_job(obj),
        )
        if not req.id or len(req.id) > 128:
            raise EnvelopeError("request id must be 1-128 characters")
        if not (math.isfinite(req.time) and math.isfinite(req.ttl)) or req.ttl <= 0:
            raise EnvelopeError("request time and ttl must be finite and ttl positive")
        return req


@dataclass(frozen=True)
class Reply:
    """One node's answer: a status code, a one-line message and structured data."""

    request_id: str
    identity: str
    status: Status
    message: str
    time: float
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the action ran and succeeded."""
        return self.status == Status.OK

    def to_bytes(self) -> bytes:
        """The exact body bytes that get signed."""
        return codec.dumps({
            "protocol": REPLY_PROTOCOL, "request_id": self.request_id, "identity": self.identity,
            "status": int(self.status), "message": self.message, "data": dict(self.data),
            "time": self.time,
        })

    @classmethod
    def from_bytes(cls, body: bytes) -> Reply:
        """Parse and shape-check a reply body."""
        obj = codec.loads_object(body, "reply", error=EnvelopeError)
        codec.require_protocol(obj, REPLY_PROTOCOL, "reply", error=EnvelopeError)
        w = "reply"
        code = _field(obj, "status", int, w)
        try:
            status = Status(code)
        except ValueError as exc:
            raise EnvelopeError(f"reply status {code} is not a known status code") from exc
        return cls(
            request_id=_field(obj, "request_id", str, w),
            identity=_field(obj, "identity", str, w),
            status=status, message=_field(obj, "message", str, w),
            time=_number(obj, "time", w), data=_field(obj, "data", dict, w),
        )
