"""`nmc facts` and `nmc inventory`: MCollective's fleet reports (mco facts, mco inventory, inventory.mc)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from nmc.cli.common import (EXIT_FAILED, EXIT_NO_RESPONSE, EXIT_USAGE, FILTER_FLAGS, build_filter, call_from_flags, client_session,
                            fleet_options, load_client_config, run)
from nmc.client.fleet import CallResult, NodeResult
from nmc.client.inventory_script import (
    InventoryScript,
    InventoryScriptError,
    display_value,
    load_script,
    render,
)
from nmc.protocol.ddl import InputError, validate_inputs
from nmc.protocol.ddls import rpcutil
from nmc.protocol.status import Status

__all__ = ["FactReport", "FactValue", "fact_report", "fact_report_json", "fact_report_lines", "facts", "inventory",
           "inventory_lines"]

_NO_NODES = "No request sent, we did not discover any nodes."
_MISSING_LABEL = "(missing)"


class _Fail(click.ClickException):
    """A one-line error with nmc's exit codes (ClickException alone always exits 1)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _gather(ctx: click.Context, flags: dict[str, Any], action: str, data: Mapping[str, Any],
            timeout: float | None, discovery_timeout: float | None) -> CallResult | None:
    """Discover with the filter/targeting flags, then one rpcutil request to exactly those nodes (None: nobody)."""
    return call_from_flags(ctx, flags, "rpcutil", action, data, timeout=timeout, discovery_timeout=discovery_timeout)


def _exit_for(ctx: click.Context, result: CallResult, failed: int) -> None:
    if result.no_response or not result.results:
        ctx.exit(EXIT_NO_RESPONSE)
    if failed:
        ctx.exit(EXIT_FAILED)


def _problem_lines(failed: list[NodeResult], no_response: tuple[str, ...]) -> list[str]:
    """Who failed and who stayed silent, in the words of `nmc rpc`'s summary."""
    lines = []
    if failed:
        lines.append(click.style(f"Failed on {len(failed)} node(s):", fg="red"))
        lines += [f"    {r.identity}: {r.status.label}: {r.message}" for r in sorted(failed, key=lambda r: r.identity)]
    if no_response:
        lines.append(click.style(f"No response from {len(no_response)} node(s):", fg="yellow"))
        lines += [f"    {name}" for name in no_response]
    return lines


# ---- nmc facts -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactValue:
    """One distinct value of the fact and the nodes that have it."""

    text: str  # how the report shows it; values that read the same are counted together
    value: Any
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class FactReport:
    """The distribution of one fact over the nodes that answered."""

    fact: str
    values: tuple[FactValue, ...]
    missing: tuple[str, ...]
    failed: tuple[NodeResult, ...]
    no_response: tuple[str, ...]


def _sort_key(value: Any, text: str) -> tuple[int, float, str]:
    """Numbers (and numeric text such as "22.04") in numeric order first, then the rest alphabetically."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is not None and math.isfinite(number):
        return (0, number, text)
    return (1, 0.0, text)


def _is_missing(r: NodeResult, fact: str) -> bool:
    """get_fact answers Aborted with {fact, value: None} when the node lacks the fact; other failures are failures."""
    return r.status == Status.ABORTED and r.data.get("fact") == fact and r.data.get("value") is None


def fact_report(fact: str, result: CallResult) -> FactReport:
    """Group the get_fact replies by value."""
    groups: dict[str, tuple[Any, list[str]]] = {}
    missing, failed = [], []
    for r in result.results:
        if r.ok:
            value = r.data.get("value")
            text = "null" if value is None else display_value(value)
            groups.setdefault(text, (value, []))[1].append(r.identity)
        elif _is_missing(r, fact):
            missing.append(r.identity)
        else:
            failed.append(r)
    values = tuple(FactValue(text, value, tuple(sorted(nodes))) for text, (value, nodes) in
                   sorted(groups.items(), key=lambda kv: _sort_key(kv[1][0], kv[0])))
    return FactReport(fact=fact, values=values, missing=tuple(sorted(missing)),
                      failed=tuple(sorted(failed, key=lambda r: r.identity)), no_response=tuple(result.no_response))


def fact_report_json(report: FactReport) -> dict[str, Any]:
    """The report for scripts: every value with its count and nodes, then who lacks the fact."""
    return {
        "fact": report.fact,
        "values": [{"value": v.value, "count": len(v.nodes), "nodes": list(v.nodes)} for v in report.values],
        "missing": list(report.missing),
        "failed": [{"identity": r.identity, "statuscode": int(r.status), "statusmsg": r.message}
                   for r in report.failed],
        "no_response": list(report.no_response),
    }


def fact_report_lines(report: FactReport, *, verbose: bool) -> list[str]:
    """MCollective's `mco facts` layout: `%-40s found %d times` per value, identities under it with -v."""
    rows = [(v.text, v.nodes) for v in report.values]
    if report.missing:
        rows.append((_MISSING_LABEL, report.missing))
    width = max([40, *(len(text) for text, _ in rows)])
    lines = [f"Report for fact: {report.fact}", ""]
    if not rows:
        lines.append("        No values found")
    for text, nodes in rows:
        lines.append(f"        {text:<{width}} found {len(nodes)} times")
        if verbose:
            lines += ["", *(f"            {n}" for n in nodes), ""]
    return lines


@click.command()
@click.argument("fact")
@fleet_options
@click.option("-v", "--verbose", is_flag=True, help="List the identities under each value.")
@click.pass_context
def facts(ctx: click.Context, fact: str, as_json: bool, timeout: float | None, discovery_timeout: float | None,
          verbose: bool, **flags: Any) -> None:
    """Show how many nodes have each value of FACT (dotted paths reach into structured facts).

    Nodes that do not have the fact are counted under "(missing)". Exit status: 0 every node
    answered, 1 some failed, 2 some did not answer (or none matched), 4 usage error.

    \b
    Examples:
      nmc facts country
      nmc facts os.family -F role=web -v
      nmc facts customer --json | jq '.values[] | {value, count}'
    """
    try:
        validate_inputs(rpcutil.DDL.actions["get_fact"], {"fact": fact})
    except InputError as exc:
        raise click.UsageError(f"{exc.reason} (nothing was sent)") from exc
    result = _gather(ctx, flags, "get_fact", {"fact": fact}, timeout, discovery_timeout)
    if result is None:
        if as_json:
            click.echo(json.dumps({"fact": fact, "values": [], "missing": [], "failed": [], "no_response": []}))
        else:
            click.echo(_NO_NODES, err=True)
        ctx.exit(EXIT_NO_RESPONSE)
    report = fact_report(fact, result)
    if as_json:
        click.echo(json.dumps(fact_report_json(report), indent=2))
    else:
        lines = fact_report_lines(report, verbose=verbose)
        problems = _problem_lines(list(report.failed), report.no_response)
        if problems:
            lines += ["", *problems] if lines[-1] else problems
        total = len(result.discovered) if result.discovered is not None else len(result.results)
        if lines[-1]:
            lines.append("")  # with -v the last group already ends in a blank line
        lines.append(f"Finished processing {len(result.results)} / {total} hosts in {result.elapsed * 1000:.2f} ms")
        for line in lines:
            click.echo(line)
    _exit_for(ctx, result, len(report.failed))


# ---- nmc inventory ---------------------------------------------------------------------------------------


def _columns(items: list[str], width: int, per_row: int) -> list[str]:
    rows = [items[i:i + per_row] for i in range(0, len(items), per_row)]
    return ["      " + " ".join(f"{item:<{width}}" for item in row).rstrip() for row in rows]


def inventory_lines(identity: str, data: Mapping[str, Any], now: datetime) -> list[str]:
    """MCollective's `mco inventory NODE` layout from rpcutil inventory data; unknown statistics are left out."""
    stats: Mapping[str, Any] = data.get("stats") or {}
    uptime = data.get("uptime")
    start = None
    if isinstance(uptime, (int, float)) and not isinstance(uptime, bool):
        start = (now - timedelta(seconds=uptime)).strftime("%Y-%m-%d %H:%M:%S %z").rstrip()
    raw_times = stats.get("times")
    times: Mapping[str, Any] = raw_times if isinstance(raw_times, Mapping) else {}
    collectives = data.get("collectives")
    rows = [
        ("Version", data.get("version")),
        ("Start Time", start),
        ("Config File", data.get("config_file", stats.get("configfile"))),
        ("Collectives", ", ".join(map(str, collectives)) if isinstance(collectives, list) else None),
        ("Main Collective", data.get("main_collective")),
        ("Process ID", data.get("pid", stats.get("pid"))),
        ("Total Messages", stats.get("total")),
        ("Messages Passed Filters", stats.get("passed")),
        ("Messages Filtered", stats.get("filtered")),
        ("Expired Messages", stats.get("ttlexpired")),
        ("Replies Sent", stats.get("replies")),
        ("Total Processor Time", f"{times['utime']} seconds" if "utime" in times else None),
        ("System Time", f"{times['stime']} seconds" if "stime" in times else None),
    ]
    lines = [f"Inventory for {identity}:", "", "   Server Statistics:"]
    lines += [f"{label + ':':>30} {display_value(value)}" for label, value in rows if value is not None]
    agents = sorted(map(str, data.get("agents") or []))
    lines += ["", "   Agents:"]
    lines += _columns(agents, 15, 3) if agents else ["      No agents installed"]
    classes = sorted(map(str, data.get("classes") or []))
    lines += ["", "   Configuration Management Classes:"]
    if classes:
        width = max(30, *(len(c) for c in classes))
        lines += _columns(classes, width, max(1, 90 // width))
    else:
        lines.append("      No classes applied")
    node_facts: Mapping[str, Any] = data.get("facts") or {}
    lines += ["", "   Facts:"]
    lines += [f"      {k} => {display_value(node_facts[k])}" for k in sorted(node_facts)] or ["      No facts known"]
    return lines


def _flags_given(flags: Mapping[str, Any]) -> list[str]:
    """The filter/targeting flags set on the command line (they only make sense with --script)."""
    given = [k for k in FILTER_FLAGS if flags.get(k)]
    if flags.get("discovery_method") not in (None, "auto"):
        given.append("discovery_method")
    given += [k for k in ("nodes_file", "limit", "limit_seed") if flags.get(k) is not None]
    if flags.get("one"):
        given.append("one")
    return given


def _one_node(ctx: click.Context, node: str, as_json: bool, timeout: float | None) -> None:
    """`nmc inventory NODE`: one direct request to that identity, as `-I NODE` would address it."""
    expr = build_filter((), (), (node,), (), (), ())
    config = load_client_config(ctx)

    async def go() -> CallResult:
        async with client_session(config, timeout=timeout) as fc:
            return await fc.call("rpcutil", "inventory", {}, filter_expr=expr, expect=(node,), direct=True)

    result = run(ctx, go)
    reply = next((r for r in result.results if r.identity == node), None)
    if reply is None:
        raise _Fail(f"no response from {node}", EXIT_NO_RESPONSE)
    if not reply.ok:
        raise _Fail(f"{node}: {reply.status.label}: {reply.message}", EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(dict(reply.data), indent=2))
        return
    for line in inventory_lines(node, reply.data, datetime.now().astimezone()):
        click.echo(line)


def _script_report(ctx: click.Context, script: InventoryScript, as_json: bool, timeout: float | None,
                   discovery_timeout: float | None, flags: dict[str, Any]) -> None:
    """`nmc inventory --script FILE`: inventory from every matching node, rendered by the script."""
    result = _gather(ctx, flags, "inventory", {}, timeout, discovery_timeout)
    if result is None:
        if as_json:
            click.echo(json.dumps({"script": script.source, "lines": [], "rows": [], "failed": [],
                                   "no_response": []}))
        else:
            click.echo(_NO_NODES, err=True)
        ctx.exit(EXIT_NO_RESPONSE)
    inventories = [{**r.data, "identity": r.identity} for r in result.results if r.ok]
    try:
        lines = render(script, inventories, datetime.now().astimezone())
    except InventoryScriptError as exc:
        raise _Fail(str(exc), EXIT_USAGE) from exc
    failed = [r for r in result.results if not r.ok]
    if as_json:
        rows = [{"identity": inv["identity"], "values": script.body.values(inv)}
                for inv in sorted(inventories, key=lambda inv: inv["identity"])]
        click.echo(json.dumps({
            "script": script.source, "lines": lines, "rows": rows,
            "failed": [{"identity": r.identity, "statuscode": int(r.status), "statusmsg": r.message} for r in failed],
            "no_response": list(result.no_response)}, indent=2))
    else:
        for line in lines:
            click.echo(line)
        for line in _problem_lines(failed, result.no_response):
            click.echo(line, err=True)
    _exit_for(ctx, result, len(failed))


@click.command()
@click.argument("node", required=False)
@click.option("--script", "script_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Inventory script (TOML, docs/inventory.md): one formatted line per matching node.")
@fleet_options
@click.pass_context
def inventory(ctx: click.Context, node: str | None, script_path: Path | None, as_json: bool,
              timeout: float | None, discovery_timeout: float | None, **flags: Any) -> None:
    """Show everything NODE says about itself, or a scripted report over many nodes.

    With NODE: statistics, agents, classes and facts of exactly that identity. With --script FILE:
    rpcutil inventory from every node matching the filter flags, one line per node in the
    script's format (MCollective's inventory.mc; see docs/inventory.md).

    \b
    Examples:
      nmc inventory node1.example.net
      nmc inventory node1.example.net --json | jq .facts
      nmc inventory --script inventory.toml -F role=web
    """
    if script_path is None:
        if node is None:
            raise click.UsageError("give a NODE, or --script FILE for a report over the matching nodes")
        given = _flags_given(flags)
        if given:
            raise click.UsageError("NODE names one node; filter and discovery flags go with --script")
        _one_node(ctx, node, as_json, timeout)
        return
    if node is not None:
        raise click.UsageError("give a NODE or --script FILE, not both (use -I NODE to limit a script)")
    try:
        script = load_script(script_path)  # before connecting: a broken script sends nothing
    except InventoryScriptError as exc:
        raise _Fail(str(exc), EXIT_USAGE) from exc
    _script_report(ctx, script, as_json, timeout, discovery_timeout, flags)
