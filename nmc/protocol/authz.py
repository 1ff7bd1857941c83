"""Authorization messages on the wire (PROTOCOL.md section 5): JSON bytes <-> frozen values (PURE).

Question (node -> `nmc.<c>.authz.check`, signed by the node)::

    {"protocol": "nmc.authz.v1", "request_id": "...", "caller": "cert=alice", "agent": "puppet",
     "action": "runonce", "identity": "web1", "facts": {...}, "classes": [...]}

Answer (policy service -> the question's reply subject, signed by the service)::

    {"protocol": "nmc.authz.answer.v1", "request_id": "...", "identity": "web1", "allowed": false,
     "rule": "puppet.policy:4", "reason": "...", "error": false, "time": 1764072000.1}

`identity` binds an answer to the node that asked (one request id reaches
many nodes, whose facts may differ); `error` is true when the service could
not evaluate the question (bad signature, bad body) and `allowed` is then
false. Reload notice (service -> `nmc.<c>.authz.reloaded`, signed)::

    {"protocol": "nmc.authz.reloaded.v1", "time": ..., "files": 3, "errors": 0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nmc.protocol.envelope import EnvelopeError, _dumps, _field, _load_object, _number
from nmc.protocol.subjects import PREFIX, encode_token

__all__ = [
    "ANSWER_PROTOCOL",
    "QUESTION_PROTOCOL",
    "RELOAD_PROTOCOL",
    "AuthzAnswer",
    "AuthzQuestion",
    "EnvelopeError",
    "ReloadNotice",
    "json_safe",
    "reloaded_subject",
]

QUESTION_PROTOCOL = "nmc.authz.v1"
ANSWER_PROTOCOL = "nmc.authz.answer.v1"
RELOAD_PROTOCOL = "nmc.authz.reloaded.v1"


def reloaded_subject(collective: str) -> str:
    """Where policy services announce that they re-read the policy files (nodes drop cached decisions)."""
    return ".".join((PREFIX, encode_token(collective), "authz", "reloaded"))


def json_safe(value: Any) -> Any:
    """`value` with everything JSON cannot carry (YAML dates, NaN, sets) turned into text, so a question always sends."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


def _protocol(obj: Mapping[str, Any], expected: str, what: str) -> None:
    if obj.get("protocol") != expected:
        raise EnvelopeError(f"{what} protocol must be {expected!r}, got {obj.get('protocol')!r}")


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
        return _dumps({"protocol": QUESTION_PROTOCOL, "request_id": self.request_id, "caller": self.caller,
                       "agent": self.agent, "action": self.action, "identity": self.identity,
                       "facts": json_safe(self.facts), "classes": list(self.classes)})

    @classmethod
    def from_bytes(cls, body: bytes) -> AuthzQuestion:
        """Parse and shape-check a question; EnvelopeError says why not."""
        w = "authorization question"
        obj = _load_object(body, w)
        _protocol(obj, QUESTION_PROTOCOL, w)
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
        return _dumps({"protocol": ANSWER_PROTOCOL, "request_id": self.request_id, "identity": self.identity,
                       "allowed": self.allowed, "rule": self.rule, "reason": self.reason, "error": self.error,
                       "time": self.time})

    @classmethod
    def from_bytes(cls, body: bytes) -> AuthzAnswer:
        """Parse and shape-check an answer; EnvelopeError says why not."""
        w = "authorization answer"
        obj = _load_object(body, w)
        _protocol(obj, ANSWER_PROTOCOL, w)
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
        return _dumps({"protocol": RELOAD_PROTOCOL, "time": self.time, "files": self.files, "errors": self.errors})

    @classmethod
    def from_bytes(cls, body: bytes) -> ReloadNotice:
        """Parse a reload notice; EnvelopeError says why not."""
        w = "reload notice"
        obj = _load_object(body, w)
        _protocol(obj, RELOAD_PROTOCOL, w)
        return cls(time=_number(obj, "time", w), files=int(_field(obj, "files", int, w)),
                   errors=int(_field(obj, "errors", int, w)))
