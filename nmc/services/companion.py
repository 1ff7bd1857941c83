"""Companions: what runs beside a node, and the view of the node they get.

`NodeHandle` is `nmc.transport.companion.NodeView` (identity, collective,
connection, signer) plus what only the services' own companions need: the
facts (the registry publishes them, the fact refresher swaps in new ones)
and the agents' DDLs (the registry lists them). It is defined here and not
in transport/ because facts are a services concept; audit/ and authz/
companions take the narrower `NodeView`, which a `NodeHandle` also is, so
every companion fits `Companion` without anything importing `Node`.
"""

from __future__ import annotations

from typing import Protocol

from nmc.protocol.ddl import AgentSpec
from nmc.services.facts import NodeFacts
from nmc.transport.companion import NodeView

__all__ = ["Companion", "NodeHandle", "NodeView"]


class NodeHandle(NodeView, Protocol):
    """A node as the services' companions see it."""

    def snapshot(self) -> NodeFacts:
        """The node's current facts and classes."""

    def agent_specs(self) -> list[AgentSpec]:
        """DDLs of every loaded agent."""

    async def update_facts(self, facts: NodeFacts) -> None:
        """Swap in new facts and re-subscribe the fact/class subjects that changed."""


class Companion(Protocol):
    """Something that runs beside a node: fact refresher, registry publisher, auditor, authorizer, ..."""

    async def start(self, node: NodeHandle) -> None:
        """Called once the node is connected and subscribed."""

    async def facts_changed(self, node: NodeHandle) -> None:
        """Called after the node swapped in new facts."""

    async def stop(self) -> None:
        """Called before the node disconnects."""
