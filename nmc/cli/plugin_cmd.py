"""`nmc plugin list` and `nmc plugin ddl AGENT`: the agents this client knows, and their DDLs.

The client finds agents exactly as the node daemon does (built-ins, the
`nmc.agents` entry points, the `plugindir` of its config), so what these
commands show is what `nmc rpc` validates inputs against.
"""

from __future__ import annotations

import json
from typing import Any

import click

from nmc.ops.agents import AgentLoadError, KnownAgent, agent_ddls
from nmc.cli.common import load_client_config
from nmc.cli.completion import complete_agent
from nmc.ops.config.files import Config
from nmc.protocol.ddl import ActionSpec, AgentSpec

__all__ = ["known_agents", "plugin"]


def known_agents(config: Config) -> dict[str, KnownAgent]:
    """The agents this client knows, by name; a plugin that cannot be loaded is a one-line error."""
    try:
        return agent_ddls(config.get_paths("plugindir"))
    except AgentLoadError as exc:
        raise click.ClickException(exc.reason) from exc


@click.group()
def plugin() -> None:
    """Agent plugins: what this client knows and their DDLs (plugindir, entry points, built-ins).

    \b
    Examples:
      nmc plugin list
      nmc plugin ddl rpcutil --text
    """


@plugin.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")
@click.pass_context
def list_plugins(ctx: click.Context, as_json: bool) -> None:
    """List the agents this client knows: name, version, where it came from, description.

    \b
    Examples:
      nmc plugin list
      nmc --config client.cfg plugin list --json | jq '.[].agent'
    """
    agents = sorted(known_agents(load_client_config(ctx)).values(), key=lambda a: a.name)
    rows = [{"agent": a.name, "version": a.spec.version, "source": a.source, "origin": a.origin,
             "description": a.spec.description} for a in agents]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    widths = [max(len(str(r[k])) for r in rows) for k in ("agent", "version", "source")]
    for r in rows:
        click.echo(f"{r['agent']:<{widths[0]}}  {r['version']:<{widths[1]}}  {r['source']:<{widths[2]}}  "
                   f"{r['description']}")


@plugin.command("ddl")
@click.argument("agent", shell_complete=complete_agent)
@click.option("--json", "fmt", flag_value="json", default=True, help="Print the DDL as JSON (the default).")
@click.option("--text", "fmt", flag_value="text", help="Print the DDL for people.")
@click.pass_context
def ddl(ctx: click.Context, agent: str, fmt: str) -> None:
    """Print AGENT's DDL: its actions, their inputs, outputs, display policy, timeout and aggregates.

    \b
    Examples:
      nmc plugin ddl rpcutil
      nmc plugin ddl rpcutil --text
      nmc plugin ddl rpcutil | jq '.actions.get_fact.inputs'
    """
    agents = known_agents(load_client_config(ctx))
    if agent not in agents:
        raise click.BadParameter(f"unknown agent {agent!r} (known: {', '.join(sorted(agents))})",
                                 param_hint="AGENT")
    spec = agents[agent].spec
    if fmt == "json":
        click.echo(json.dumps(spec.to_dict(), indent=2))
    else:
        click.echo("\n".join(ddl_text(spec, agents[agent])))


def _value(value: Any) -> str:
    return json.dumps(value)


def _action_text(spec: ActionSpec) -> list[str]:
    timeout = "node default" if spec.timeout is None else f"{spec.timeout:g}s"
    lines = [f"  {spec.name}: {spec.description}", f"      display: {spec.display}, timeout: {timeout}"
             + (", read-only (may be allowed unsigned: security.unsigned_actions)" if spec.readonly else "")]
    for i in spec.inputs:
        need = "optional" if i.optional else "required"
        extra = [f"default {_value(i.default)}"] if i.default is not None else []
        extra += [f"validation {i.validation}"] if i.validation else []
        extra += [f"maxlength {i.maxlength}"] if i.maxlength else []
        lines.append(f"      input  {i.name} ({i.type}, {need}): {i.description}")
        if extra:
            lines.append(f"             {', '.join(extra)}")
    for o in spec.outputs:
        lines.append(f"      output {o.name} \"{o.label}\": {o.description} (default {_value(o.default)})")
    for a in spec.aggregates:
        lines.append(f"      aggregate {a.function}({a.output})")
    return lines


def ddl_text(spec: AgentSpec, loaded: KnownAgent) -> list[str]:
    """The DDL for people: a heading, then each action with its inputs, outputs and aggregates."""
    lines = [f"{spec.name} {spec.version} ({loaded.source}: {loaded.origin})", spec.description, "", "ACTIONS:"]
    for name in sorted(spec.actions):
        lines += _action_text(spec.actions[name])
    return lines
