"""What the node's request path needs from authorization: a Decision and an Authorizer.

The pipeline asks after the filter matched and before anything runs; the
caller it passes is always the verified certificate name. Implementations:
allow-all (no authorization configured), local policy files, or the
action-policy service.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["AllowAll", "Authorizer", "Decision"]


@dataclass(frozen=True)
class Decision:
    """An authorization outcome: allowed or not, the rule that decided (`puppet.policy:4`), and why."""

    allowed: bool
    rule: str = ""
    reason: str = ""


class Authorizer(Protocol):
    """Decides whether `caller` may run `agent.action` on this node."""

    async def authorize(self, *, caller: str, agent: str, action: str, identity: str,
                        facts: Mapping[str, Any], classes: Collection[str], facts_version: int,
                        request_id: str) -> Decision:
        """The decision for one request; must not raise for ordinary denials."""


class AllowAll:
    """No authorization configured: everything verified is allowed (the node warns at start)."""

    async def authorize(self, *, caller: str, agent: str, action: str, identity: str,
                        facts: Mapping[str, Any], classes: Collection[str], facts_version: int,
                        request_id: str) -> Decision:
        """Always allow, saying why."""
        return Decision(True, "", "authorization is not configured (authz.mode = none)")
