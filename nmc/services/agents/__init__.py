"""Built-in agents shipped with nmc."""

from __future__ import annotations

from nmc.services.agent import Agent
from nmc.services.agents.rpcutil import RpcUtil

__all__ = ["BUILTIN_AGENTS", "RpcUtil"]

BUILTIN_AGENTS: tuple[type[Agent], ...] = (RpcUtil,)
