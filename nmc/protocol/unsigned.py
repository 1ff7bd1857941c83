"""Unsigned read-only queries: what a plain NATS tool (`nats req`) may ask a node. Pure.

A NATS tool cannot sign an nmc request, so a node may answer a few actions
without a signature, behind two gates: its own allowlist
(`security.unsigned_actions`, which may only name actions whose DDL says
`readonly`) and the action policy, which sees the fixed caller
:data:`UNSIGNED_CALLER`. Such a request is only the action's input `data`
object (or nothing) on the node's own subject; the node makes up the rest of
the request itself. Because only read-only actions qualify, replaying or
forging one can at most read again what the policy lets `unsigned=nats`
read, which is why the node needs no ttl or replay check for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nmc.errors import ProtocolError
from nmc.protocol.ddl import AgentSpec
from nmc.protocol import codec
from nmc.protocol.envelope import EnvelopeError, Request
from nmc.protocol.subjects import RequestSubject

__all__ = ["UNSIGNED_CALLER", "UNSIGNED_SENDER", "UnsignedConfigError", "check_unsigned_actions",
           "parse_unsigned_actions", "unsigned_data", "unsigned_refusal", "unsigned_request"]

# `<kind>=<name>` like every caller id, but never `cert=...`: signed callers are always `cert=<certificate
# name>` (the node checks that), so no certificate can ever be mistaken for this caller or the other way round.
UNSIGNED_CALLER = "unsigned=nats"
# The node cannot know who sent an unsigned message, and says so in audit records.
UNSIGNED_SENDER = "unknown"
# Nothing checks an unsigned request's ttl (the node stamps its time on arrival and keeps no replay
# entry); the envelope needs a positive one, so it says "as long as an ordinary request".
_NOMINAL_TTL = 60.0


class UnsignedConfigError(ProtocolError, ValueError):
    """An unusable `security.unsigned_actions` entry; `reason` is one line naming it."""


def parse_unsigned_actions(items: Iterable[str]) -> frozenset[tuple[str, str]]:
    """`agent.action` names as (agent, action) pairs; wildcards are refused so every entry is a deliberate choice."""
    pairs: set[tuple[str, str]] = set()
    for item in items:
        text = item.strip()
        agent, dot, action = text.partition(".")
        if not dot or not agent or not action or "." in action or "*" in text:
            raise UnsignedConfigError(f"{text!r} is not agent.action (e.g. rpcutil.get_fact; no wildcards)")
        pairs.add((agent, action))
    return frozenset(pairs)


def check_unsigned_actions(allowed: Iterable[tuple[str, str]], specs: Mapping[str, AgentSpec]) -> None:
    """Refuse entries naming an agent or action this node does not have, or an action that is not read-only."""
    for agent, action in sorted(allowed):
        spec = specs.get(agent)
        if spec is None:
            raise UnsignedConfigError(f"{agent}.{action}: no agent {agent!r} is loaded on this node")
        action_spec = spec.actions.get(action)
        if action_spec is None:
            raise UnsignedConfigError(f"{agent}.{action}: agent {agent} has no action {action!r}")
        if not action_spec.readonly:
            raise UnsignedConfigError(f"{agent}.{action} is not read-only (its DDL does not say readonly=True), "
                                      "so it can never be run unsigned")


def unsigned_refusal(routed: RequestSubject, allowed: frozenset[tuple[str, str]], *, collective: str,
                     identity: str) -> str | None:
    """Why this node will not answer an unsigned message on `routed` (a hint for the reply), or None if it will."""
    if not allowed:
        return "unsigned requests are off on this node (security.unsigned_actions is empty)"
    if (routed.agent, routed.action) not in allowed:
        return f"{routed.agent}.{routed.action} is not in this node's security.unsigned_actions"
    if routed.kind != "node" or routed.collective != collective or routed.keys != (identity,):
        # One unsigned message must not fan out to every node (replies, policy questions, audit records).
        return "unsigned requests are answered only on nmc.<collective>.node.<identity>.<agent>.<action>"
    return None


def unsigned_data(body: bytes) -> dict[str, Any]:
    """The action's input data from an unsigned body: nothing, or a JSON object (EnvelopeError says why not)."""
    if not body.strip():
        return {}
    # The same strict JSON as a signed request (UTF-8, no NaN, no lone surrogates), so the data can be
    # audited and echoed exactly as a signed request's data can.
    return codec.loads_object(body, "unsigned request body (the action's input data)", error=EnvelopeError)


def unsigned_request(routed: RequestSubject, data: Mapping[str, Any], *, request_id: str, now: float) -> Request:
    """The internal request the node runs for an admitted unsigned message: caller UNSIGNED_CALLER, no filter."""
    return Request(id=request_id, collective=routed.collective, agent=routed.agent, action=routed.action,
                   caller=UNSIGNED_CALLER, sender=UNSIGNED_SENDER, time=now, ttl=_NOMINAL_TTL, data=dict(data),
                   filter="")
