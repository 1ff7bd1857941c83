"""`nmc ping`, `nmc find` and `nmc rpc`: the everyday fleet commands."""

from __future__ import annotations

import json
from typing import Any

import click

from nmc.cli.common import (
    EXIT_FAILED,
    EXIT_NO_RESPONSE,
    take_filter,
    client_session,
    filter_options,
    job_options,
    load_client_config,
    say_job,
    output_options,
    run,
    batch_options,
    batch_progress,
    batch_size,
    take_targeting,
    targeting_options,
)
from nmc.client.discovery import DiscoveryError, discover
from nmc.client.run import ping as ping_nodes
from nmc.client.run import JobOptions, run_action
from nmc.cli.completion import complete_action, complete_agent, complete_input
from nmc.cli.render import (DISPLAY_MODES, call_json, default_display, print_call, print_jsonl, print_table,
                            shown_replies)
from nmc.client.fleet import CallResult
from nmc.protocol.ddl import ActionSpec, AgentSpec, InputError, coerce_cli_value, summarize, validate_inputs

__all__ = ["find", "ping", "rpc"]

_NO_NODES = "No request sent, we did not discover any nodes."
_NO_MATCH = "We did not discover any nodes."
# How alike an agent name must be to a known one to count as a slip of the keyboard (difflib's
# ratio): `rpcutill` for rpcutil (0.93), `pupet` for puppet (0.91), `shel` for shell (0.89),
# `rcputil` (0.86). Such a name is refused; a less similar one may be another team's agent and is
# sent: `hello` is not a typo of `shell` (0.8). An unknown action of a known agent is refused
# anyway, so its "did you mean" may be a looser guess (`pnig` for ping: 0.75).
_CLOSE_AGENT, _CLOSE_ACTION = 0.85, 0.6


def _ping(ctx: click.Context, flags: dict[str, Any], method: str, timeout: float | None,
          discovery_timeout: float | None) -> CallResult:
    """Ping with the command's filter flags: registry-expected when it can, else broadcast."""
    expr = take_filter(flags)
    config = load_client_config(ctx)

    async def go() -> CallResult:
        async with client_session(config, timeout=timeout, discovery_timeout=discovery_timeout) as fc:
            return await ping_nodes(fc, expr, method=method, timeout=discovery_timeout or timeout)

    return run(ctx, go)


@click.command()
@filter_options
@output_options
@click.option("--discovery-method", "--dm", "method", type=click.Choice(("auto", "broadcast")), default="auto",
              show_default=True,
              help="auto: expect the nodes the registry lists (ends on the last one's reply, names the silent); "
                   "broadcast: ask everyone, end when replies stall.")
@click.pass_context
def ping(ctx: click.Context, as_json: bool, timeout: float | None, discovery_timeout: float | None,
         method: str, **flags: Any) -> None:
    """Ping matching nodes and show each one's round-trip time.

    When the registry can be read, the nodes it lists are expected: ping ends the moment
    the last of them answers, and names any that did not within the discovery timeout
    (exit 2). Otherwise (or with --dm broadcast) it ends when replies stop arriving.

    \b
    Examples:
      nmc ping
      nmc ping -F country=us
      nmc ping --json | jq '.replies[].sender'
    """
    result = _ping(ctx, flags, method, timeout, discovery_timeout)
    times = sorted(r.elapsed * 1000 for r in result.results)
    if as_json:
        click.echo(json.dumps({**call_json(result), "times_ms": {
            "min": min(times, default=None), "max": max(times, default=None),
            "avg": sum(times) / len(times) if times else None}}, indent=2))
    else:
        for r in sorted(result.results, key=lambda r: r.elapsed):
            click.echo(f"{r.identity:<40} time={r.elapsed * 1000:.2f} ms")
        click.echo("\n\n" + click.style("---- ping statistics ----", bold=True))  # plain text off a terminal
        if times:
            click.echo(f"{len(times)} replies max: {times[-1]:.2f} min: {times[0]:.2f} "
                       f"avg: {sum(times) / len(times):.2f}")
        else:
            click.echo("No responses received")
        if result.no_response:
            click.echo(click.style(f"No response from {len(result.no_response)} registered node(s): ", fg="yellow")
                       + ", ".join(result.no_response))
    if not result.results or result.no_response:
        ctx.exit(EXIT_NO_RESPONSE)


@click.command()
@filter_options
@targeting_options
@output_options
@click.option("--quiet-after", "quiet_after", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS",
              help="With --dm registry: mark nodes whose registry record is older than SECONDS as quiet "
                   "(2 x registerinterval, 120 by default, means two missed refreshes).")
@click.pass_context
def find(ctx: click.Context, as_json: bool, timeout: float | None, discovery_timeout: float | None,
         quiet_after: float | None, **flags: Any) -> None:
    """List the identities of the nodes that match the filter.

    When no node matches, says so on standard error (--json: prints []) and exits 2.

    \b
    Examples:
      nmc find -F role=web
      nmc find -S "country=us and not role=db" --json
      nmc find --dm registry -C apache      # from the registry, no broadcast
      nmc find --dm registry --quiet-after 120   # and which of them went quiet
    """
    targeting = take_targeting(flags)
    expr = take_filter(flags)
    if quiet_after is not None and targeting.method != "registry":
        raise click.UsageError("--quiet-after needs --dm registry: only registry records say when a node was last seen")
    config = load_client_config(ctx)

    async def go() -> tuple[tuple[str, ...], dict[str, float]]:
        async with client_session(config, timeout=timeout, discovery_timeout=discovery_timeout) as fc:
            found = (await discover(fc, expr, targeting)).identities
            if quiet_after is None:
                return found, {}
            return found, await _last_seen(fc, expr)

    found, seen = run(ctx, go)
    names = sorted(found)
    if quiet_after is not None:
        _print_quiet(names, seen, quiet_after, as_json)
    elif as_json:
        click.echo(json.dumps(names))
    elif names:
        click.echo("\n".join(names))
    if not names and not as_json:
        click.echo(_NO_MATCH, err=True)
    if not names:
        ctx.exit(EXIT_NO_RESPONSE)


async def _last_seen(fc: Any, expr: str) -> dict[str, float]:
    """last_seen (unix time) of every registry record `expr` selects, by identity."""
    from nmc.client.registry import RegistryError, registry_discover  # noqa: I001 - JetStream only when asked

    try:
        entries = await registry_discover(fc.nc, fc.settings.collective, expr, bucket=fc.settings.registry_bucket)
    except RegistryError as exc:
        raise DiscoveryError(str(exc)) from exc
    return {e.identity: e.last_seen for e in entries}


def _print_quiet(names: list[str], seen: dict[str, float], quiet_after: float, as_json: bool) -> None:
    """Each name with its record's age; `quiet` when older than `quiet_after` seconds (docs/discovery.md)."""
    import time

    now = time.time()
    rows = []
    for name in names:
        last = seen.get(name)
        age = None if last is None else round(max(0.0, now - last), 1)
        rows.append({"identity": name, "last_seen": last, "age_s": age, "quiet": age is None or age > quiet_after})
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        if row["age_s"] is None:
            click.echo(f"{row['identity']}  QUIET (no registry record any more)")
        elif row["quiet"]:
            click.echo(f"{row['identity']}  QUIET (last seen {row['age_s']:g} s ago)")
        else:
            click.echo(row["identity"])


def _close_to(word: str, names: Any, cutoff: float) -> str | None:
    """The known name `word` is most probably a misspelling of, if any."""
    import difflib  # only for a mistyped name: ping and find never load it

    found = difflib.get_close_matches(word, sorted(names), n=1, cutoff=cutoff)
    return found[0] if found else None


def _parse_inputs(agent: str, action: str, pairs: tuple[str, ...],
                  specs: dict[str, AgentSpec]) -> tuple[dict[str, Any], ActionSpec | None]:
    """`key=value` words into typed inputs, checked against the DDL when the agent is known here.

    An agent this client does not know gets its inputs as strings; the node validates them. Unless
    its name is a near miss of a known agent's: that is a typo, and nothing is sent.
    """
    if agent not in specs:
        guess = _close_to(agent, specs, _CLOSE_AGENT)
        if guess is not None:
            raise click.UsageError(f"unknown agent {agent!r} (did you mean {guess!r}?); nothing was sent")
    action_spec = specs[agent].actions.get(action) if agent in specs else None
    if agent in specs and action_spec is None:
        known = ", ".join(sorted(specs[agent].actions))
        guess = _close_to(action, specs[agent].actions, _CLOSE_ACTION)
        hint = f"did you mean {guess!r}? " if guess else ""
        raise click.UsageError(f"agent {agent!r} has no action {action!r} ({hint}actions: {known}); "
                               "nothing was sent")
    inputs = {i.name: i for i in action_spec.inputs} if action_spec else {}
    data: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"inputs are key=value, got {pair!r}")
        try:
            data[key] = coerce_cli_value(inputs.get(key), value)
        except InputError as exc:
            raise click.UsageError(f"{exc.reason} (nothing was sent)") from exc
    if action_spec is not None:
        try:
            validate_inputs(action_spec, data)
        except InputError as exc:
            raise click.UsageError(f"{exc.reason} (nothing was sent)") from exc
    return data, action_spec


@click.command()
@click.argument("agent", shell_complete=complete_agent)
@click.argument("action", shell_complete=complete_action)
@click.argument("inputs", nargs=-1, metavar="[KEY=VALUE]...", shell_complete=complete_input)
@filter_options
@targeting_options
@output_options
@click.option("--jsonl", "as_jsonl", is_flag=True,
              help="Print one JSON object per reply, then a {\"summary\": ...} line.")
@click.option("--table", "as_table", is_flag=True,
              help="Print one row per node: identity, status and the action's outputs.")
@click.option("--display", type=click.Choice(DISPLAY_MODES), default=None,
              help="Which replies to show: ok, failed, all or none (default: the action's DDL display policy "
                   "for text and --table, all for --json/--jsonl). The summary is always printed.")
@click.option("--no-discovery", is_flag=True,
              help="Skip discovery: publish once and gather until replies stall (no 'no response' list).")
@click.option("--background", is_flag=True,
              help="Send the request as a job, print its id and exit at once: the nodes keep their replies "
                   "(`nmc jobs show ID --wait`).")
@click.option("--no-job", is_flag=True,
              help="Do not record this rpc as a job (client.cfg: jobs.enabled = false for every rpc).")
@batch_options
@click.pass_context
def rpc(ctx: click.Context, agent: str, action: str, inputs: tuple[str, ...], as_json: bool, as_jsonl: bool,
        as_table: bool, display: str | None, timeout: float | None, discovery_timeout: float | None,
        no_discovery: bool, background: bool, no_job: bool, batch: str | None, batch_sleep: float,
        **flags: Any) -> None:
    """Run AGENT ACTION on every matching node and show each node's structured result.

    Inputs are KEY=VALUE words, typed and validated against the action's DDL before anything is
    sent (`nmc plugin ddl AGENT` shows it); a mistake is a usage error and nothing is sent. So is
    an unknown action of a known agent, or an agent name close to a known one (`rpcutill`: did
    you mean `rpcutil`?). Any other agent this client does not know (not built in, installed or
    in its plugindir) is sent with its inputs as strings and the nodes validate them; when no node
    serves it, the summary says so. Discovers the matching nodes first, publishes the
    request once and ends the moment every discovered node has answered; nodes that did not
    answer are named. Aggregate summaries declared in the DDL are printed under the results.
    Every rpc is a job: its id is printed, and the nodes keep their signed replies in NMC_JOBS
    (`nmc jobs list`, `nmc jobs show ID`). Exit status: 0 all ok, 1 some failed, 2 some did not
    answer, 4 usage error.

    \b
    Examples:
      nmc rpc rpcutil ping
      nmc rpc rpcutil get_fact fact=country -F role=web
      nmc rpc rpcutil inventory -I web1.example.com --json
      nmc rpc rpcutil get_fact fact=os.family --table --display failed
      nmc rpc puppet runonce -C role::web --background   # prints the job id and exits
    """
    if sum((as_json, as_jsonl, as_table)) > 1:
        raise click.UsageError("--json, --jsonl and --table cannot be combined")
    if background and (no_job or batch is not None or no_discovery):
        raise click.UsageError("--background cannot be combined with --no-job, --batch or --no-discovery: "
                               "the nodes keep the replies of a job that says whom it waits for")
    targeting = take_targeting(flags)
    expr = take_filter(flags)
    config = load_client_config(ctx)
    from nmc.cli.plugin_cmd import known_agents  # the DDLs: rpc only, not ping or find

    specs = {name: known.spec for name, known in known_agents(config).items()}
    data, action_spec = _parse_inputs(agent, action, inputs, specs)
    if batch is not None:
        batch_size(batch, 1)  # a bad --batch is a usage error before anything is sent
    progress = batch_progress()
    machine = as_json or as_jsonl
    job = None
    if background or not (no_job or no_discovery):
        from nmc.protocol.ddl import redact_inputs  # the start record keeps inputs as the audit trail does

        shown = redact_inputs(action_spec, data)
        job = (JobOptions(background=True, shown_data=shown) if background
               else job_options(config, shown_data=shown, on_job=None if machine else say_job))

    async def go() -> CallResult | None:
        async with client_session(config, timeout=timeout, discovery_timeout=discovery_timeout) as fc:
            return await run_action(fc, agent, action, data, filter_expr=expr, targeting=targeting,
                                    discovery=not no_discovery, batch=batch, batch_sleep=batch_sleep,
                                    on_batch=None if machine else progress, job=job)

    result = run(ctx, go)
    if background and result is not None:
        if machine:
            click.echo(json.dumps({"job_id": result.job_id, "targets": list(result.discovered or ())}))
        else:
            click.echo(f"Job {result.job_id} sent to {len(result.discovered or ())} node(s); "
                       f"see `nmc jobs show {result.job_id} --wait`")
        return
    if result is None:
        if as_json:
            click.echo(json.dumps({"replies": [], "no_response": [], "summary": {"discovered": 0},
                                   "aggregates": []}))
        elif as_jsonl:
            click.echo(json.dumps({"summary": {"discovered": 0}, "no_response": [], "aggregates": []}))
        else:
            click.echo(_NO_NODES, err=True)
        ctx.exit(EXIT_NO_RESPONSE)
    aggregates = summarize(action_spec, (r.data for r in result.results if r.ok)) if action_spec else []
    mode = display or ("all" if machine else default_display(action_spec))
    if as_json:
        click.echo(json.dumps(call_json(result, aggregates, shown_replies(result, mode)), indent=2))
    elif as_jsonl:
        print_jsonl(result, shown_replies(result, mode), aggregates)
    elif as_table:
        print_table(result, spec=action_spec, display=mode, aggregates=aggregates)
    else:
        print_call(result, spec=action_spec, display=mode, aggregates=aggregates)
    if result.no_response or (not result.results):
        ctx.exit(EXIT_NO_RESPONSE)
    if result.failed:
        ctx.exit(EXIT_FAILED)
