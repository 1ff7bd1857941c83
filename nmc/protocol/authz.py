"""Authorization messages on the wire (PROTOCOL.md section 5): JSON bytes <-> frozen values. Pure.

They live in nmc.protocol with the other messages, not in nmc.authz: the node,
the policy service and the tests all read them, and none of them should have to
load the policy engine (or nats-py) to do so.

Question (node -> `nmc.<c>.authz.check`, signed by the node)::

    {"protocol": "nmc.authz.v1", "request_id": "...", "caller": "cert=alice", "agent": "puppet",
     "action": "runonce", "identity": "web1", "facts": {...}, "classes": [...]}

Answer (policy service -> the question's reply subject, signed by the service)::

    {"protocol": "nmc.authz.answer.v1", "request_id": "...", "identity": "web1", "allowed": false,
     "rule": "puppet.policy:4", "reason": "...", "error": false, "time": 1764072000.1}

`identity` binds an answer to the node that asked (one request id reaches
many nodes, whose facts may differ); `error` is true when the service could
not evaluate the question (bad signature, bad body) and `allowed` is then
false. Reload notice (service -> `reloaded_subject(c)` in nmc.protocol.subjects, signed)::

    {"protocol": "nmc.authz.reloaded.v1", "time": ..., "files": 3, "errors": 0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from nmc.protocol import codec
from nmc.protocol.envelope import EnvelopeError

__all__ = [
    "ANSWER_PROTOCOL",
    "QUESTION_PROTOCOL",
    "RELOAD_PROTOCOL",
    "AuthzAnswer",
    "AuthzQuestion",
    "ReloadNotice",
    "json_safe",
]

QUESTION_PROTOCOL = "nmc.authz.v1"
ANSWER_PROTOCOL = "nmc.authz.answer.v1"
RELOAD_PROTOCOL = "nmc.authz.reloaded.v1"


def json_safe(value: Any) -> Any:
    """`value` with what JSON cannot carry (YAML dates, NaN, sets) turned into text: a question always sends."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


# Every authz reader raises EnvelopeError, as the envelopes do: node and service answer it the same way.
_field = partial(codec.field, error=EnvelopeError)
_number = partial(codec.number, error=EnvelopeError)


@dataclass(frozen=True)
class AuthzQuestion:
    """May `caller` run `agent.action` on node `identity`, which has these facts and classes?"""

    request_id: str
    caller: str
    agent: str
    action: str
    identity: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        """The exact body bytes the node signs."""
        return codec.dumps({"protocol": QUESTION_PROTOCOL, "request_id": self.request_id, "caller": self.caller,
                       "agent": self.agent, "action": self.action, "identity": self.identity,
                       "facts": json_safe(self.facts), "classes": list(self.classes)})

    @classmethod
    def from_bytes(cls, body: bytes) -> AuthzQuestion:
        """Parse and shape-check a question; EnvelopeError says why not."""
        w = "authorization question"
        obj = codec.loads_object(body, w, error=EnvelopeError)
        codec.require_protocol(obj, QUESTION_PROTOCOL, w, error=EnvelopeError)
        classes = _field(obj, "classes", list, w)
        if not all(isinstance(c, str) for c in classes):
            raise EnvelopeError(f"{w} field 'classes' must be a list of strings")
        return cls(request_id=_field(obj, "request_id", str, w), caller=_field(obj, "caller", str, w),
                   agent=_field(obj, "agent", str, w), action=_field(obj, "action", str, w),
                   identity=_field(obj, "identity", str, w), facts=_field(obj, "facts", dict, w),
                   classes=tuple(classes))


@dataclass(frozen=True)
class AuthzAnswer:
    """The policy service's decision for one question."""

    request_id: str
    identity: str
    allowed: bool
    rule: str
    reason: str
    time: float
    error: bool = False

    def to_bytes(self) -> bytes:
        """The exact body bytes the service signs."""
        return codec.dumps({"protocol": ANSWER_PROTOCOL, "request_id": self.request_id, "identity": self.identity,
                       "allowed": self.allowed, "rule": self.rule, "reason": self.reason, "error": self.error,
                       "time": self.time})

    @classmethod
    def from_bytes(cls, body: bytes) -> AuthzAnswer:
        """Parse and shape-check an answer; EnvelopeError says why not."""
        w = "authorization answer"
        obj = codec.loads_object(body, w, error=EnvelopeError)
        codec.require_protocol(obj, ANSWER_PROTOCOL, w, error=EnvelopeError)
        answer = cls(request_id=_field(obj, "request_id", str, w), identity=_field(obj, "identity", str, w),
                     allowed=_field(obj, "allowed", bool, w), rule=_field(obj, "rule", str, w),
                     reason=_field(obj, "reason", str, w), time=_number(obj, "time", w),
                     error=bool(obj.get("error", False)))
        if answer.error and answer.allowed:
            raise EnvelopeError(f"{w} is an error answer that allows: contradictory")
        return answer


@dataclass(frozen=True)
class ReloadNotice:
    """A policy service re-read its files: cached decisions are stale."""

    time: float
    files: int = 0
    errors: int = 0

    def to_bytes(self) -> bytes:
        """The exact body bytes the service signs."""
        return codec.dumps({"protocol": RELOAD_PROTOCOL, "time": self.time, "files": self.files, "errors": self.errors})

    @classmethod
    def from_bytes(cls, body: bytes) -> ReloadNotice:
        """Parse a reload notice; EnvelopeError says why not."""
        w = "reload notice"
        obj = codec.loads_object(body, w, error=EnvelopeError)
        codec.require_protocol(obj, RELOAD_PROTOCOL, w, error=EnvelopeError)
        return cls(time=_number(obj, "time", w), files=int(_field(obj, "files", int, w)),
                   errors=int(_field(obj, "errors", int, w)))
