"""The rpcutil agent's DDL: what every node can say about itself (MCollective's rpcutil)."""

from __future__ import annotations

from nmc import __version__
from nmc.protocol.ddl import ActionSpec, AgentSpec, Input
from nmc.protocol.regex import builtin_pattern

__all__ = ["DDL"]

DDL = AgentSpec(
    name="rpcutil",
    description="General helpful actions that expose the node's own state",
    version=__version__,
    actions={spec.name: spec for spec in (
        ActionSpec("ping", "Responds to requests for PING with PONG", readonly=True),
        ActionSpec("inventory", "System inventory: agents, facts, classes, version, uptime", readonly=True),
        ActionSpec("get_fact", "Retrieve a single fact from the node", inputs=(
            Input("fact", "string", "The fact to retrieve (dotted paths reach into structured facts)",
                  optional=False, validation=builtin_pattern(r"^[\w.:@-]+$"), maxlength=256),), readonly=True),
        ActionSpec("agent_inventory", "Inventory of all agents on the node", readonly=True),
        ActionSpec("daemon_stats", "The node daemon's request statistics", readonly=True),
    )},
)
"""rpcutil: ping, inventory, get_fact, agent_inventory, daemon_stats; all read-only."""
