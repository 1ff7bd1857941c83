"""Built-in agents shipped with nmc."""

from __future__ import annotations

from nmc.services.agent import Agent
from nmc.services.agents.package import Package
from nmc.services.agents.puppet import Puppet
from nmc.services.agents.rpcutil import RpcUtil
from nmc.services.agents.service import Service
from nmc.services.agents.shell import Shell

__all__ = ["BUILTIN_AGENTS", "Package", "Puppet", "RpcUtil", "Service", "Shell"]

# Shell is loaded everywhere (so its DDL is known) but refuses every request unless the node's
# own configuration sets plugin.shell.enabled = true: see nmc/services/agents/shell.py.
BUILTIN_AGENTS: tuple[type[Agent], ...] = (RpcUtil, Package, Service, Shell, Puppet)
