"""The rpcutil agent: what every node can say about itself (MCollective's rpcutil)."""

from __future__ import annotations

import time
from typing import Any, Mapping

from nmc import __version__
from nmc.protocol.ddls.rpcutil import DDL
from nmc.protocol.status import Status
from nmc.services.agent import ActionFailed, ActionRequest, Agent
from nmc.services.agents._ddl import declared

__all__ = ["RpcUtil"]


def _lookup(facts: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """Find a fact by name or dotted path (a literal key with dots wins)."""
    if name in facts:
        return True, facts[name]
    node: Any = facts
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


class RpcUtil(Agent):
    """General utility actions: ping, inventory, facts, agent list, daemon statistics."""

    name = DDL.name
    description = DDL.description
    version = DDL.version

    @declared(DDL)
    async def ping(self, req: ActionRequest) -> Mapping[str, Any]:
        """Answer with the node's clock."""
        return {"pong": time.time()}

    @declared(DDL)
    async def inventory(self, req: ActionRequest) -> Mapping[str, Any]:
        """Everything a node says about itself in one reply."""
        snap = self.node.snapshot()
        return {
            "agents": sorted(s.name for s in self.node.agent_specs()),
            "facts": dict(snap.facts), "classes": list(snap.classes),
            "version": __version__, "main_collective": self.node.collective,
            "collectives": [self.node.collective],
            "uptime": round(time.time() - self.node.started, 3),
            "stats": self.node.stats(),
        }

    @declared(DDL)
    async def get_fact(self, req: ActionRequest) -> Mapping[str, Any]:
        """One fact's value; status Aborted when the node has no such fact."""
        found, value = _lookup(self.node.snapshot().facts, req.data["fact"])
        if not found:
            raise ActionFailed(f"no fact named {req.data['fact']!r}", status=Status.ABORTED,
                               data={"fact": req.data["fact"], "value": None})
        return {"fact": req.data["fact"], "value": value}

    @declared(DDL)
    async def agent_inventory(self, req: ActionRequest) -> Mapping[str, Any]:
        """Name, version and description of every loaded agent."""
        return {"agents": [{"agent": s.name, "name": s.name, "version": s.version, "description": s.description,
                            "actions": sorted(s.actions)} for s in sorted(self.node.agent_specs(), key=lambda s: s.name)]}

    @declared(DDL)
    async def daemon_stats(self, req: ActionRequest) -> Mapping[str, Any]:
        """Counters in MCollective's daemon_stats shape, plus uptime and version."""
        return {**self.node.stats(), "uptime": round(time.time() - self.node.started, 3),
                "starttime": self.node.started, "version": __version__,
                "agents": sorted(s.name for s in self.node.agent_specs())}
