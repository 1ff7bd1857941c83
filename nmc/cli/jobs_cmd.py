"""`nmc jobs list|show|wait`: what earlier rpcs sent and what came back, from NMC_JOBS (nmc.client.jobs)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

import click

from nmc.cli.common import EXIT_FAILED, EXIT_NO_RESPONSE, client_session, load_client_config, run
from nmc.cli.render import call_json, default_display, print_call, print_table, shown_replies
from nmc.client.fleet import CallResult
from nmc.client.jobs import Job, list_jobs, read_job, wait_job
from nmc.ops.config.settings import parse_duration
from nmc.protocol.ddl import summarize
from nmc.protocol.jobs import JobError, check_job_id

__all__ = ["jobs"]


@click.group()
def jobs() -> None:
    """Jobs: every rpc's request and the nodes' signed replies, kept in NMC_JOBS.

    You read your own jobs; a certificate with the auditor role reads everyone's
    (--caller), and jobs.policy may grant reads of named callers' jobs (docs/jobs.md). Every stored reply's signature is checked again when it is shown.

    \b
    Examples:
      nmc jobs list --since 1h
      nmc jobs show 3f2a9c0e5b1d4e7f8a6b2c4d1e0f9a8b --wait
      nmc jobs list --caller alice --agent puppet --json
    """


def _job_id(value: str) -> str:
    try:
        return check_job_id(value)
    except JobError as exc:
        raise click.BadParameter(exc.reason if hasattr(exc, "reason") else str(exc), param_hint="ID") from None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@jobs.command("list")
@click.option("--caller", default=None, metavar="NAME",
              help="Whose jobs (a certificate name; default: your own). Others' need the auditor role or a jobs.policy grant.")
@click.option("--agent", default=None, help="Only jobs of this agent.")
@click.option("--since", default=None, metavar="AGE", help="Only jobs started in the last AGE (90s, 12h, 7d).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of jobs, newest first.")
@click.pass_context
def list_command(ctx: click.Context, caller: str | None, agent: str | None, since: str | None, as_json: bool) -> None:
    """List jobs, newest first: id, caller, action, filter, targets, ok/failed/missing, start, duration.

    \b
    Examples:
      nmc jobs list
      nmc jobs list --since 2h --agent puppet
      nmc jobs list --caller bob --json      # needs the auditor role or a jobs.policy grant
    """
    after = None
    if since is not None:
        age = parse_duration(since)
        if age is None or age <= 0:
            raise click.BadParameter(f"{since!r} is not an age (90s, 12h, 7d)", param_hint="--since")
        after = time.time() - age
    config = load_client_config(ctx)

    async def go() -> list[Any]:
        async with client_session(config) as fc:
            return await list_jobs(fc.nc, fc.verifier, fc.settings.collective, caller or fc.signer.name,
                                   agent=agent, since=after)

    found = run(ctx, go)
    if as_json:
        click.echo(json.dumps([j.to_dict() for j in found], indent=2))
        return
    if not found:
        click.echo("No jobs.", err=True)
        return
    click.echo(f"{'ID':32}  {'CALLER':12} {'ACTION':24} {'TARGETS':>7} {'OK':>4} {'FAILED':>6} {'MISSING':>7}  "
               f"{'STARTED (UTC)':19}  DURATION  FILTER")
    for summary in found:
        d = summary.to_dict()
        targets = "-" if d["targets"] is None else str(d["targets"])
        duration = "background" if d["duration_s"] is None else f"{d['duration_s']:.2f}s"
        click.echo(f"{d['id']:32}  {d['caller']:12} {d['agent'] + '.' + d['action']:24} {targets:>7} {d['ok']:>4} "
                   f"{d['failed']:>6} {d['missing']:>7}  {_when(d['started'])}  {duration:9} {d['filter']}")


def _as_call(job: Job) -> CallResult:
    """The job as `nmc rpc` would have shown it when it ended."""
    start = job.start
    # A background job has no end record: it took until its latest reply (or is still running).
    ended = job.end.ended if job.end is not None else start.started + max((r.elapsed for r in job.results), default=0.0)
    return CallResult(request_id=start.id, agent=start.agent, action=start.action, subject="job",
                      results=job.results, discovered=start.expected, no_response=job.missing,
                      elapsed=max(0.0, ended - start.started), dropped=len(job.unverified), job_id=start.id)


def _show(ctx: click.Context, job_id: str, caller: str | None, wait: bool, as_json: bool, as_table: bool,
          display: str | None) -> None:
    config = load_client_config(ctx)

    async def go() -> Job:
        async with client_session(config) as fc:
            who = caller or fc.signer.name
            if wait:
                return await wait_job(fc.nc, fc.verifier, fc.settings.collective, who, job_id)
            return await read_job(fc.nc, fc.verifier, fc.settings.collective, who, job_id)

    job = run(ctx, go)
    from nmc.cli.plugin_cmd import known_agents  # the DDL renders the outputs as `nmc rpc` does

    known = known_agents(config).get(job.start.agent)
    spec = known.spec.actions.get(job.start.action) if known is not None else None
    result = _as_call(job)
    mode = display or ("all" if as_json else default_display(spec))
    # The DDL's summaries over the OK replies, as `nmc rpc` prints them under the results.
    aggregates = summarize(spec, (r.data for r in result.results if r.ok)) if spec is not None else []
    if as_json:
        out = call_json(result, aggregates, shown_replies(result, mode))
        out["job"] = {"caller": job.start.caller, "filter": job.start.filter, "started": job.start.started,
                      "timeout": job.start.timeout, "inputs": dict(job.start.data), "ended": job.end is not None,
                      "complete": job.complete()}
        out["unverified"] = [{"subject": u.subject, "reason": u.reason} for u in job.unverified]
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"Job {job.start.id}: {job.start.agent}.{job.start.action} by {job.start.caller} at "
                   f"{_when(job.start.started)} UTC" + (f", filter {job.start.filter}" if job.start.filter else ""))
        if as_table:
            print_table(result, spec=spec, display=mode, aggregates=aggregates)
        else:
            print_call(result, spec=spec, display=mode, aggregates=aggregates)
        for bad in job.unverified:
            click.echo(click.style(f"  FAILED VERIFICATION {bad.subject}: {bad.reason}", fg="red"), err=True)
        if job.end is None and not job.complete():
            click.echo("  (still running: --wait waits for every target or the job's timeout)", err=True)
    if job.unverified or result.failed:
        ctx.exit(EXIT_FAILED)
    if result.no_response:
        ctx.exit(EXIT_NO_RESPONSE)


@jobs.command("show")
@click.argument("job_id", metavar="ID", callback=lambda ctx, param, value: _job_id(value))
@click.option("--caller", default=None, metavar="NAME", help="Whose job (default: your own; others' need auditor).")
@click.option("--wait", is_flag=True, help="Wait until every target answered or the job's timeout passed.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as `nmc rpc --json` would, plus its records.")
@click.option("--table", "as_table", is_flag=True, help="Print one row per node.")
@click.option("--display", type=click.Choice(("ok", "failed", "all", "none")), default=None,
              help="Which replies to show (default: the action's DDL display policy).")
@click.pass_context
def show(ctx: click.Context, job_id: str, caller: str | None, wait: bool, as_json: bool, as_table: bool,
         display: str | None) -> None:
    """Show a job's results as `nmc rpc` showed them, every stored reply verified again.

    A stored reply that fails verification (tampered, or signed by another node) is
    reported as such and never shown as a result. Exit status as `nmc rpc`, and 1 when
    anything failed verification.

    \b
    Examples:
      nmc jobs show 3f2a9c0e5b1d4e7f8a6b2c4d1e0f9a8b
      nmc jobs show 3f2a9c0e5b1d4e7f8a6b2c4d1e0f9a8b --wait --json
    """
    if as_json and as_table:
        raise click.UsageError("--json and --table cannot be combined")
    _show(ctx, job_id, caller, wait, as_json, as_table, display)


@jobs.command("wait")
@click.argument("job_id", metavar="ID", callback=lambda ctx, param, value: _job_id(value))
@click.option("--caller", default=None, metavar="NAME", help="Whose job (default: your own).")
@click.option("--json", "as_json", is_flag=True, help="Print the job as `nmc jobs show --json` does.")
@click.pass_context
def wait(ctx: click.Context, job_id: str, caller: str | None, as_json: bool) -> None:
    """Wait until every target of a job answered or its timeout passed, then show it.

    \b
    Examples:
      nmc jobs wait 3f2a9c0e5b1d4e7f8a6b2c4d1e0f9a8b
      JOB=$(nmc rpc puppet runonce --background --json | jq -r .job_id); nmc jobs wait "$JOB"
    """
    _show(ctx, job_id, caller, True, as_json, False, None)
