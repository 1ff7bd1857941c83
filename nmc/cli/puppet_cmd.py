"""`nmc puppet ...`: run Puppet across the fleet, enable/disable it, see its state (MCollective's `mco puppet`).

Every subcommand talks to the `puppet` agent only (an implicit `-A puppet`
filter), with the usual filter, targeting and output flags. Exit status as
`nmc rpc`: 0 all ok, 1 some failed, 2 some did not answer, 4 usage error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import click

from nmc.cli.common import (EXIT_FAILED, EXIT_NO_RESPONSE, batch_size, call_from_flags, client_session, fleet_options,
                            job_options, say_job,
                            load_client_config, run, take_filter, take_targeting)
from nmc.cli.render import call_json, print_aggregates, print_summary
from nmc.client.discovery import Targeting, discover
from nmc.client.fleet import CallResult, FleetClient
from nmc.client.run import end_recorded, start_recorded
from nmc.client.runall import RunAllResult, RunEvent, run_in_batches, runall
from nmc.protocol.ddl import summarize
from nmc.protocol.ddls.puppet import DDL, TAGS_PATTERN, describe_age
from nmc.protocol.regex import search

__all__ = ["puppet"]

_NO_NODES = "No request sent, we did not discover any nodes."
_F = Callable[..., Any]


def _tags(value: str | None) -> str | None:
    if value is not None and not search(TAGS_PATTERN, value):
        raise click.UsageError(f"--tags takes comma-separated Puppet tags, got {value!r}")
    return value


def _call(ctx: click.Context, action: str, data: Mapping[str, Any], flags: dict[str, Any], timeout: float | None,
          discovery_timeout: float | None, *, job: bool = False) -> CallResult | None:
    """Discover, then one puppet request to the found nodes; None when nothing was found. `job`: record it."""
    # The user's filter plus `-A puppet`: only nodes with the puppet agent are asked.
    return call_from_flags(ctx, flags, "puppet", action, data, timeout=timeout, discovery_timeout=discovery_timeout,
                           filter_agent="puppet", job=job)


def _finish(ctx: click.Context, result: CallResult | None, as_json: bool,
            extra: Callable[[CallResult], dict[str, Any]] | None = None) -> CallResult:
    """JSON output, or the no-nodes exit; returns the result for text output."""
    if result is None:
        if as_json:
            click.echo(json.dumps({"replies": [], "no_response": [], "summary": {"discovered": 0}}))
        else:
            click.echo(_NO_NODES, err=True)
        ctx.exit(EXIT_NO_RESPONSE)
    assert result is not None
    if as_json:
        click.echo(json.dumps({**call_json(result), **(extra(result) if extra else {})}, indent=2))
    return result


def _exit_code(ctx: click.Context, result: CallResult) -> None:
    if result.no_response or not result.results:
        ctx.exit(EXIT_NO_RESPONSE)
    if result.failed:
        ctx.exit(EXIT_FAILED)


def _node_lines(result: CallResult, ok_line: Callable[[Mapping[str, Any]], str]) -> None:
    """`   identity: text` per node (MCollective's layout); failures in red with their message."""
    replies = sorted(result.results, key=lambda r: r.identity)
    width = max((len(r.identity) for r in replies), default=0)
    for r in replies:
        text = ok_line(r.data) if r.ok else click.style(f"{r.status.label}: {r.message}", fg="red")
        click.echo(f"   {r.identity.rjust(width)}: {text}")
    click.echo()


def _aggregates(result: CallResult, action: str) -> None:
    spec = DDL.actions[action]
    print_aggregates(summarize(spec, (r.data for r in result.results if r.ok)))


@click.group()
def puppet() -> None:
    """Run Puppet across the fleet, enable or disable it, and see its state.

    \b
    Examples:
      nmc puppet status
      nmc puppet runonce -W country=us --batch 3
      nmc puppet runall 5 -C webserver
      nmc puppet disable --message "db migration, ask ops" -F role=db
    """


# -- runonce ---------------------------------------------------------------------------------------------------


def _event_printer() -> Callable[[RunEvent], None]:
    """One line per event, stamped with seconds since the runs began (the clock of the closing total)."""
    colors = {"ok": "green", "failed": "red", "start_failed": "red", "timed_out": "yellow", "no_response": "yellow"}

    def show(event: RunEvent) -> None:
        stamp = f"[{event.elapsed:7.1f}s]"
        text = f"{stamp} {event.identity}: {event.message} ({event.applying} applying)"
        click.echo(click.style(text, fg=colors.get(event.kind)))
    return show


def _runs_json(result: RunAllResult) -> dict[str, Any]:
    return {"concurrency": result.concurrency, "elapsed_s": round(result.elapsed, 3),
            "peak_applying": result.peak_applying,
            "nodes": [{"identity": o.identity, "outcome": o.outcome, "reason": o.reason, "started": o.started,
                       "finished": o.finished, "duration_s": None if o.duration is None else round(o.duration, 3),
                       "lastrun": o.lastrun, "changed_resources": o.changed_resources,
                       "failed_resources": o.failed_resources} for o in result.outcomes],
            "summary": {kind: len(result.by_outcome(kind))
                        for kind in ("ok", "failed", "start_failed", "timed_out", "no_response")}}


_NOT_OK = {"failed": "failed", "start_failed": "not started", "timed_out": "timed out", "no_response": "no response"}


def _print_runs(result: RunAllResult, limit_word: str) -> None:
    """The closing summary. Each node's reason was its event line already: here only who, by outcome."""
    counts = {kind: len(result.by_outcome(kind)) for kind in ("ok", "failed", "start_failed", "timed_out",
                                                               "no_response")}
    click.echo()
    click.echo(click.style("Summary", bold=True))
    click.echo(f"  Nodes: {len(result.outcomes)} targeted, {counts['ok']} ok, {counts['failed']} failed, "
               f"{counts['start_failed']} not started, {counts['timed_out']} timed out, "
               f"{counts['no_response']} no response")
    click.echo(f"  Most applying at once: {result.peak_applying} ({limit_word} {result.concurrency})")
    for kind, word in _NOT_OK.items():
        names = [o.identity for o in result.by_outcome(kind)]
        if names:
            click.echo(click.style(f"  {word.capitalize()}: {', '.join(names)}", fg="red"))
    click.echo(f"Finished {len(result.outcomes)} Puppet run(s) in {result.elapsed:.1f} s")


def _runs_exit(ctx: click.Context, result: RunAllResult) -> None:
    if not result.outcomes or result.by_outcome("no_response"):
        ctx.exit(EXIT_NO_RESPONSE)
    if not result.ok:
        ctx.exit(EXIT_FAILED)


def _run_options(noop: bool, tags: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"noop": noop}
    if tags:
        options["tags"] = tags
    return options


def _wait_options(fn: _F) -> _F:
    fn = click.option("--poll-interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
                      help="Seconds between status polls of the nodes being waited for.")(fn)
    fn = click.option("--run-timeout", type=click.FloatRange(min=0, min_open=True), default=1800.0,
                      show_default=True, help="Seconds a run may take before it is reported and its slot freed.")(fn)
    return fn


def _runs(ctx: click.Context, flags: dict[str, Any], timeout: float | None, discovery_timeout: float | None,
          work: Callable[[FleetClient, tuple[str, ...], str, str | None], Any], *, run_options: dict[str, Any],
          run_timeout: float) -> RunAllResult | None:
    """Discover, record the runs as one job (every node's runonce reply kept), run `work`, end the job."""
    targeting: Targeting = take_targeting(flags)
    expr = take_filter(flags, agent="puppet")
    config = load_client_config(ctx)
    job = job_options(config, shown_data=run_options, on_job=say_job)

    async def go() -> RunAllResult | None:
        async with client_session(config, timeout=timeout, discovery_timeout=discovery_timeout) as fc:
            found = await discover(fc, expr, targeting)
            if not found.identities:
                return None
            job_id = None if job is None else await start_recorded(fc, "puppet", "runonce", expr, found.identities,
                                                                    run_timeout, job)
            result: RunAllResult = await work(fc, found.identities, expr, job_id)
            if job_id is not None:
                started = [o.identity for o in result.outcomes if o.outcome != "no_response"]
                await end_recorded(fc, job_id, started, [o.identity for o in result.by_outcome("no_response")])
            return result

    return run(ctx, go)



def _show_runs(ctx: click.Context, result: RunAllResult | None, as_json: bool, limit_word: str) -> None:
    if result is None:
        click.echo(json.dumps({"nodes": [], "summary": {}}) if as_json else _NO_NODES, err=not as_json)
        ctx.exit(EXIT_NO_RESPONSE)
    assert result is not None
    if as_json:
        click.echo(json.dumps(_runs_json(result), indent=2))
    else:
        _print_runs(result, limit_word)
    _runs_exit(ctx, result)


@puppet.command()
@click.option("--noop", is_flag=True, help="No-op run: report what would change, change nothing.")
@click.option("--tags", metavar="TAG[,TAG...]", default=None, help="Apply only resources with these tags.")
@click.option("--splay/--no-splay", default=None, help="Wait a random time (up to --splaylimit) before running.")
@click.option("--splaylimit", type=click.IntRange(min=1), default=None,
              help="Longest splay in seconds (default: the node's plugin.puppet.splaylimit).")
@click.option("--force", is_flag=True, help="Run now, ignoring --splay.")
@click.option("--batch", metavar="N|N%", default=None,
              help="Run on N (or N%) nodes at a time, waiting for each batch's runs to FINISH.")
@click.option("--batch-sleep", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds to pause between batches.")
@_wait_options
@fleet_options
@click.pass_context
def runonce(ctx: click.Context, noop: bool, tags: str | None, splay: bool | None, splaylimit: int | None,
            force: bool, batch: str | None, batch_sleep: float, run_timeout: float, poll_interval: float,
            as_json: bool, timeout: float | None, discovery_timeout: float | None, **flags: Any) -> None:
    """Start one Puppet run on every matching node.

    Without --batch the nodes answer as soon as their run started (runs go on in the background).
    With --batch N, N nodes run at a time and the next batch starts when those runs have ended
    (polled with `puppet status`), so never more than N nodes apply at once.

    \b
    Examples:
      nmc puppet runonce -I web1.example.com
      nmc puppet runonce -W country=us --batch 3
      nmc puppet runonce --noop --tags apache,ssl -C webserver
      nmc puppet runonce --splay --splaylimit 120
    """
    _tags(tags)
    data: dict[str, Any] = {**_run_options(noop, tags), "force": force}
    if splay is not None:
        data["splay"] = splay
    if splaylimit is not None:
        data["splaylimit"] = splaylimit
    if batch is None:
        result = _finish(ctx, _call(ctx, "runonce", data, flags, timeout, discovery_timeout, job=True), as_json)
        if not as_json:
            _node_lines(result, lambda d: str(d.get("summary", "")))
            print_summary(result)
        _exit_code(ctx, result)
        return
    batch_size(batch, 1)  # a bad --batch is a usage error before anything is sent
    if splay:
        raise click.UsageError("--batch waits for each batch's runs, so it cannot be combined with --splay")
    show = None if as_json else _event_printer()

    async def work(fc: FleetClient, names: tuple[str, ...], expr: str, job: str | None) -> RunAllResult:
        size = batch_size(batch, len(names))
        if show is not None:
            click.echo(f"Running Puppet on {len(names)} node(s), {size} at a time")

        def on_batch(done: int, total: int) -> None:
            if show is not None:
                click.echo(f"--- batch {done} / {total} finished")
        return await run_in_batches(fc, identities=names, size=size, batch_sleep=batch_sleep, filter_expr=expr,
                                    run_options=_run_options(noop, tags), poll_interval=poll_interval,
                                    run_timeout=run_timeout, on_event=show, on_batch=on_batch, job=job)

    _show_runs(ctx, _runs(ctx, flags, timeout, discovery_timeout, work, run_options=_run_options(noop, tags),
                          run_timeout=run_timeout), as_json, "batch size")


@puppet.command("runall")
@click.argument("concurrency", type=click.IntRange(min=1), metavar="N")
@click.option("--noop", is_flag=True, help="No-op runs: report what would change, change nothing.")
@click.option("--tags", metavar="TAG[,TAG...]", default=None, help="Apply only resources with these tags.")
@_wait_options
@fleet_options
@click.pass_context
def runall_cmd(ctx: click.Context, concurrency: int, noop: bool, tags: str | None, run_timeout: float,
               poll_interval: float, as_json: bool, timeout: float | None, discovery_timeout: float | None,
               **flags: Any) -> None:
    """Run Puppet on every matching node, keeping at most N applying at once.

    A sliding window: the next node starts as soon as any run ends. Nodes already applying count
    against N until they finish (then get their own run); a node that stops answering or runs
    longer than --run-timeout is reported and its slot freed.

    \b
    Examples:
      nmc puppet runall 5
      nmc puppet runall 2 -F country=de --run-timeout 600
      nmc puppet runall 10 --json | jq '.nodes[] | select(.outcome != "ok")'
    """
    _tags(tags)
    show = None if as_json else _event_printer()

    async def work(fc: FleetClient, names: tuple[str, ...], expr: str, job: str | None) -> RunAllResult:
        if show is not None:
            click.echo(f"Running Puppet on {len(names)} node(s), at most {concurrency} at once")
        return await runall(fc, concurrency=concurrency, identities=names, filter_expr=expr,
                            run_options=_run_options(noop, tags), poll_interval=poll_interval,
                            run_timeout=run_timeout, on_event=show, job=job)

    _show_runs(ctx, _runs(ctx, flags, timeout, discovery_timeout, work, run_options=_run_options(noop, tags),
                          run_timeout=run_timeout), as_json, "limit")


# -- status, summary, enable, disable ----------------------------------------------------------------------------


def _status_report(result: CallResult) -> dict[str, Any]:
    ok = [r for r in result.results if r.ok]
    applying = sorted(r.identity for r in ok if r.data.get("applying"))
    disabled = {r.identity: r.data.get("disable_message", "") for r in sorted(ok, key=lambda r: r.identity)
                if not r.data.get("enabled", True)}
    ages = [r.data["since_lastrun"] for r in ok if isinstance(r.data.get("since_lastrun"), (int, float))]
    never = sorted(r.identity for r in ok if not r.data.get("lastrun"))
    return {"applying": applying, "enabled": len(ok) - len(disabled), "disabled": disabled,
            "never_run": never, "newest_run_age": min(ages, default=None), "oldest_run_age": max(ages, default=None)}


@puppet.command()
@fleet_options
@click.pass_context
def status(ctx: click.Context, as_json: bool, timeout: float | None, discovery_timeout: float | None,
           **flags: Any) -> None:
    """Show whether Puppet is applying, enabled, and when it last ran, per node and in summary.

    \b
    Examples:
      nmc puppet status
      nmc puppet status -F country=us --json | jq .puppet.applying
    """
    result = _finish(ctx, _call(ctx, "status", {}, flags, timeout, discovery_timeout), as_json,
                     lambda res: {"puppet": _status_report(res)})
    if not as_json:
        _node_lines(result, lambda d: str(d.get("message", "")))
        _aggregates(result, "status")
        report = _status_report(result)
        names = f" ({', '.join(report['applying'])})" if report["applying"] else ""
        click.echo(f"Nodes applying: {len(report['applying'])}{names}")
        why = "; ".join(f"{n}: '{m}'" for n, m in report["disabled"].items())
        click.echo(f"Enabled: {report['enabled']}, Disabled: {len(report['disabled'])}" + (f" ({why})" if why else ""))
        if report["newest_run_age"] is None:
            click.echo(f"Last run ages: no completed runs (never run: {len(report['never_run'])})")
        else:
            click.echo(f"Last run ages: newest {describe_age(report['newest_run_age'])}, oldest "
                       f"{describe_age(report['oldest_run_age'])}, never run: {len(report['never_run'])}")
        click.echo()
        print_summary(result)
    _exit_code(ctx, result)


def _summary_line(d: Mapping[str, Any]) -> str:
    if not d.get("lastrun"):
        return "never ran"
    return (f"last run {describe_age(d.get('since_lastrun') or 0)} ago, {d.get('changed_resources', 0)} changed, "
            f"{d.get('failed_resources', 0)} failed, {d.get('total_resources', 0)} total resources, "
            f"{float(d.get('total_time') or 0):.2f} s, config {d.get('config_version', '')}")


@puppet.command("summary")
@fleet_options
@click.pass_context
def summary_cmd(ctx: click.Context, as_json: bool, timeout: float | None, discovery_timeout: float | None,
                **flags: Any) -> None:
    """Show each node's last run summary (resources, time, config version).

    \b
    Examples:
      nmc puppet summary -C webserver
      nmc puppet summary --json | jq '.replies[].data.resources'
    """
    result = _finish(ctx, _call(ctx, "last_run_summary", {}, flags, timeout, discovery_timeout), as_json)
    if not as_json:
        _node_lines(result, _summary_line)
        _aggregates(result, "last_run_summary")
        print_summary(result)
    _exit_code(ctx, result)


@puppet.command()
@fleet_options
@click.pass_context
def enable(ctx: click.Context, as_json: bool, timeout: float | None, discovery_timeout: float | None,
           **flags: Any) -> None:
    """Allow Puppet runs again (removes Puppet's agent_disabled.lock).

    \b
    Example:
      nmc puppet enable -F role=db
    """
    result = _finish(ctx, _call(ctx, "enable", {}, flags, timeout, discovery_timeout), as_json)
    if not as_json:
        _node_lines(result, lambda d: "Enabled Puppet")
        print_summary(result)
    _exit_code(ctx, result)


@puppet.command()
@click.option("--message", "-m", default=None, help="Why Puppet is disabled (default: 'Disabled via nmc by <you>').")
@fleet_options
@click.pass_context
def disable(ctx: click.Context, message: str | None, as_json: bool, timeout: float | None,
            discovery_timeout: float | None, **flags: Any) -> None:
    """Stop Puppet from running (writes agent_disabled.lock, as `puppet agent --disable` does).

    \b
    Example:
      nmc puppet disable --message "db migration, ask ops" -F role=db
    """
    data = {"message": message} if message else {}
    result = _finish(ctx, _call(ctx, "disable", data, flags, timeout, discovery_timeout), as_json)
    if not as_json:
        _node_lines(result, lambda d: f"Disabled Puppet: '{d.get('disable_message', '')}'")
        print_summary(result)
    _exit_code(ctx, result)
