"""The built-in agents' DDLs, apart from their code: what a client needs to know about an agent.

Each module here is pure data (nmc.protocol.ddl values and the patterns its
inputs validate with), so the client and the `nmc` command read a built-in
agent's actions, inputs, outputs and summaries without importing the agent,
its subprocess plumbing or the node runtime. The agents in
nmc.services.agents implement exactly these specs (`declared(DDL)` takes
each action's spec from here), as Choria keeps DDLs apart from agent code.
Plugin agents still carry their DDL in their own code.
"""

from __future__ import annotations

from nmc.protocol.ddl import AgentSpec
from nmc.protocol.ddls import package, puppet, rpcutil, service, shell

__all__ = ["BUILTIN_DDLS", "BUILTIN_ORIGINS"]

BUILTIN_DDLS: tuple[AgentSpec, ...] = (rpcutil.DDL, package.DDL, service.DDL, shell.DDL, puppet.DDL)
"""Every built-in agent's DDL, in the order the node loads the agents."""

BUILTIN_ORIGINS: dict[str, str] = {
    "rpcutil": "nmc.services.agents.rpcutil:RpcUtil",
    "package": "nmc.services.agents.package:Package",
    "service": "nmc.services.agents.service:Service",
    "shell": "nmc.services.agents.shell:Shell",
    "puppet": "nmc.services.agents.puppet:Puppet",
}
"""Where each built-in agent's code lives (`nmc plugin list` shows it), named without importing it."""
