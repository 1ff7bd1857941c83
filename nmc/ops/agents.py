"""The agents a client knows, and their DDLs: what `nmc rpc` validates inputs against, what the console labels with.

The built-ins' DDLs come from nmc.protocol.ddls, which is data: a command
that only talks to built-in agents imports no agent code and no node
runtime. Agents from the `nmc.agents` entry points or a `plugindir` carry
their DDL in their own code, so only then are they loaded, exactly as the
node daemon loads them (nmc.services.loader: same order, same conflict
rules), and `nmc plugin list` shows what the node would run. It lives in nmc.ops,
not nmc.cli, because the web console (nmc.ops.console) labels job replies with the
same DDLs as `nmc jobs show`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nmc.errors import NmcError
from nmc.protocol.ddl import AgentSpec

__all__ = ["ENTRY_POINT_GROUP", "AgentLoadError", "KnownAgent", "agent_ddls"]

ENTRY_POINT_GROUP = "nmc.agents"
"""The group plugin distributions register agents in (nmc.services.loader's; a unit test keeps them equal)."""


class AgentLoadError(NmcError):
    """A plugin agent that cannot be loaded; `reason` is one line naming the file or entry point."""


@dataclass(frozen=True)
class KnownAgent:
    """One agent's DDL and where it comes from (for `nmc plugin list`)."""

    spec: AgentSpec
    source: str  # builtin, entry point or plugin dir
    origin: str  # module:Class, the entry point, or the plugin file

    @property
    def name(self) -> str:
        """The agent's name."""
        return self.spec.name


def agent_ddls(plugindirs: Sequence[Path] = ()) -> dict[str, KnownAgent]:
    """Every agent the command knows, by name, in load order; AgentLoadError when a plugin fails to load."""
    # The built-in DDLs are built when asked for, not when a command that may ask imports this module
    # (`nmc ping` does, through nmc.cli.fleet_cmds): issue 16, start-up.
    from nmc.protocol.ddls import BUILTIN_DDLS, BUILTIN_ORIGINS

    if not plugindirs and not importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        return {ddl.name: KnownAgent(ddl, "builtin", BUILTIN_ORIGINS[ddl.name]) for ddl in BUILTIN_DDLS}
    # A plugin's DDL is in its code: load the agents as the node does (built-ins included, for the conflict rules).
    from nmc.services.loader import PluginError, load_agents

    try:
        loaded = load_agents(plugindirs)
    except PluginError as exc:
        raise AgentLoadError(exc.reason) from exc
    return {a.name: KnownAgent(a.cls.spec(), a.source, a.origin) for a in loaded}
