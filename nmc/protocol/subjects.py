"""NATS subjects of the wire contract (PROTOCOL.md section 1).

Every token that comes from data is encoded so it is exactly one NATS token:
`A-Z a-z 0-9 _ -` stand as they are, every other UTF-8 byte is `%XX`. That
keeps `.`, `*`, `>` and spaces in fact values from changing a subject's shape,
and the encoding is its own exact inverse.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "PREFIX",
    "agent_requests",
    "all_subject",
    "audit_query_subject",
    "audit_subject",
    "audit_subjects",
    "authz_subject",
    "class_requests",
    "class_subject",
    "collective_root",
    "decode_token",
    "encode_token",
    "event_query_subject",
    "event_subject",
    "event_subjects",
    "fact_requests",
    "fact_subject",
    "node_requests",
    "node_subject",
    "parse_audit_subject",
    "parse_event_subject",
    "parse_request_subject",
    "reloaded_subject",
    "RequestSubject",
    "route_requests",
    "SubjectError",
]

from dataclasses import dataclass

from nmc.errors import ProtocolError

PREFIX = "nmc"
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ENCODED = re.compile(r"\A(?:[A-Za-z0-9_-]|%[0-9A-F]{2})*\Z")


class SubjectError(ProtocolError, ValueError):
    """A subject or token that does not follow PROTOCOL.md section 1."""


# Cached: every request and audit record encodes or decodes the same few tokens (collective, identity,
# agent, action) again, byte by byte (issue 16: the node's request path). Pure functions of a string,
# bounded; an error is raised again each time, never cached.
@functools.lru_cache(maxsize=4096)
def encode_token(text: str) -> str:
    """Encode data as one NATS subject token (empty text becomes `%` escaped nothing: `_` is kept for it)."""
    if text == "":
        # An empty token would make `a..b`, which NATS rejects; `%00`-free marker keeps it decodable.
        return "%"
    out: list[str] = []
    for byte in text.encode("utf-8"):
        out.append(chr(byte) if byte in _SAFE else f"%{byte:02X}")
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def decode_token(token: str) -> str:
    """Exact inverse of encode_token; raises SubjectError on anything it could not have produced."""
    if token == "%":
        return ""
    if not token or not _ENCODED.match(token):
        raise SubjectError(f"malformed subject token {token!r}")
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "%":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(token[i]))
            i += 1
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubjectError(f"subject token {token!r} is not UTF-8") from exc
    if encode_token(text) != token:
        # e.g. `%41` for `A`: not canonical, so two subjects would mean one thing.
        raise SubjectError(f"subject token {token!r} is not canonically encoded")
    return text


def _join(*tokens: str) -> str:
    return ".".join(tokens)


def all_subject(collective: str, agent: str, action: str) -> str:
    """Broadcast request subject: every node with the agent receives it."""
    return _join(PREFIX, encode_token(collective), "all", encode_token(agent), encode_token(action))


def fact_subject(collective: str, name: str, value: str, agent: str, action: str) -> str:
    """Request routed by the broker to nodes whose fact `name` has canonical value `value`."""
    return _join(PREFIX, encode_token(collective), "fact", encode_token(name), encode_token(value),
                 encode_token(agent), encode_token(action))


def class_subject(collective: str, klass: str, agent: str, action: str) -> str:
    """Request routed to nodes that have configuration class `klass`."""
    return _join(PREFIX, encode_token(collective), "class", encode_token(klass),
                 encode_token(agent), encode_token(action))


def node_subject(collective: str, identity: str, agent: str, action: str) -> str:
    """Direct request to one node (after discovery, batches)."""
    return _join(PREFIX, encode_token(collective), "node", encode_token(identity),
                 encode_token(agent), encode_token(action))


def authz_subject(collective: str) -> str:
    """Where nodes ask the action-policy service."""
    return _join(PREFIX, encode_token(collective), "authz", "check")


def reloaded_subject(collective: str) -> str:
    """Where policy services announce that they re-read the policy files (nodes drop cached decisions)."""
    return _join(PREFIX, encode_token(collective), "authz", "reloaded")


def audit_subject(collective: str, identity: str) -> str:
    """Where a node publishes its audit records (JetStream stream NMC_AUDIT)."""
    return _join(PREFIX, "audit", encode_token(collective), encode_token(identity))


def event_subject(collective: str, kind: str, identity: str) -> str:
    """Where `identity` publishes its lifecycle events of `kind` (startup, alive, ...; docs/events.md)."""
    return _join(PREFIX, "events", encode_token(collective), encode_token(kind), encode_token(identity))


# Subscribe side: the wildcard subjects that receive what the builders above publish. A subscriber
# and the broker permissions (nmc.security.permissions) take them from here, so a change of shape
# cannot leave one of them listening where nothing is published any more.


def collective_root(collective: str) -> str:
    """`nmc.<collective>`: the root of every request and authorization subject of one collective."""
    return _join(PREFIX, encode_token(collective))


def route_requests(collective: str, kind: str) -> str:
    """Every request routed one way (`all`, `fact`, `class`, `node`) in the collective."""
    return _join(collective_root(collective), kind, ">")


def node_requests(collective: str, identity: str) -> str:
    """Every direct request to node `identity` (what `node_subject` publishes)."""
    return _join(collective_root(collective), "node", encode_token(identity), ">")


def agent_requests(collective: str, agent: str) -> str:
    """Every broadcast request for `agent`, any action (what `all_subject` publishes)."""
    return _join(collective_root(collective), "all", encode_token(agent), "*")


def class_requests(collective: str, klass: str) -> str:
    """Every request routed to configuration class `klass` (what `class_subject` publishes)."""
    return _join(collective_root(collective), "class", encode_token(klass), ">")


def fact_requests(collective: str, name: str, value: str) -> str:
    """Every request routed to fact `name` = `value` (what `fact_subject` publishes)."""
    return _join(collective_root(collective), "fact", encode_token(name), encode_token(value), ">")


def audit_subjects(collective: str | None = None) -> str:
    """Every audit record (of one collective when given): the stream's subjects, the audit service's hint."""
    if collective is None:
        return _join(PREFIX, "audit", ">")
    return _join(PREFIX, "audit", encode_token(collective), ">")


def audit_query_subject(collective: str | None = None, identity: str | None = None) -> str:
    """The narrowest subject holding every audit record of `collective` and `identity` (None: any)."""
    if collective is None and identity is None:
        return audit_subjects()
    return _join(PREFIX, "audit", "*" if collective is None else encode_token(collective),
                 "*" if identity is None else encode_token(identity))


def parse_audit_subject(subject: str) -> tuple[str, str]:
    """(collective, identity) of an audit subject; SubjectError for anything audit_subject cannot produce."""
    tokens = subject.split(".")
    if len(tokens) != 4 or tokens[:2] != [PREFIX, "audit"]:
        raise SubjectError(f"not an nmc audit subject: {subject!r}")
    return decode_token(tokens[2]), decode_token(tokens[3])


def event_subjects(collective: str | None = None) -> str:
    """Every lifecycle event (of one collective when given): the stream NMC_EVENTS's subjects, `nmc events watch`."""
    if collective is None:
        return _join(PREFIX, "events", ">")
    return _join(PREFIX, "events", encode_token(collective), ">")


def event_query_subject(collective: str | None = None, kind: str | None = None, identity: str | None = None) -> str:
    """The narrowest subject holding every event of `collective`, `kind` and `identity` (None: any)."""
    if collective is None and kind is None and identity is None:
        return event_subjects()
    return _join(PREFIX, "events", *("*" if value is None else encode_token(value)
                                     for value in (collective, kind, identity)))


def parse_event_subject(subject: str) -> tuple[str, str, str]:
    """(collective, kind, identity) of an event subject; SubjectError for anything event_subject cannot produce."""
    tokens = subject.split(".")
    if len(tokens) != 5 or tokens[:2] != [PREFIX, "events"]:
        raise SubjectError(f"not an nmc event subject: {subject!r}")
    return decode_token(tokens[2]), decode_token(tokens[3]), decode_token(tokens[4])


@dataclass(frozen=True)
class RequestSubject:
    """A request subject taken apart: how it was routed, and to which agent/action."""

    collective: str
    kind: str  # all | fact | class | node
    agent: str
    action: str
    keys: tuple[str, ...] = ()


_KIND_KEYS = {"all": 0, "fact": 2, "class": 1, "node": 1}


def parse_request_subject(subject: str) -> RequestSubject:
    """Decode a request subject; raises SubjectError for anything not in section 1."""
    tokens = subject.split(".")
    if len(tokens) < 5 or tokens[0] != PREFIX:
        raise SubjectError(f"not an nmc request subject: {subject!r}")
    kind = tokens[2]
    if kind not in _KIND_KEYS or len(tokens) != 5 + _KIND_KEYS[kind]:
        raise SubjectError(f"not an nmc request subject: {subject!r}")
    decoded = [decode_token(t) for t in tokens[1:2] + tokens[3:]]
    collective, rest = decoded[0], decoded[1:]
    keys, (agent, action) = tuple(rest[:-2]), rest[-2:]
    return RequestSubject(collective=collective, kind=kind, agent=agent, action=action, keys=keys)
