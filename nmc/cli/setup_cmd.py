"""`nmc ops setup`: the operator makes the audit and jobs streams and the registry bucket (nmc.ops.broker.jetstream)."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from nmc.errors import NmcError, reason_of
from nmc.cli.common import load_client_config
from nmc.ops.broker.jetstream import DEFAULT_REGISTRY_TTL, JetStreamSetup, setup_as
from nmc.ops.config.settings import SettingsError, parse_duration

__all__ = ["setup"]


def _seconds(text: str, option: str, *, zero: bool) -> float:
    seconds = parse_duration(text)
    if seconds is None or seconds < 0 or (seconds == 0 and not zero):
        raise click.BadParameter(f"{text!r} is not an age (90s, 12h, 30d{', 0' if zero else ''})", param_hint=option)
    return seconds


@click.command("setup")
@click.option("--audit-max-age", default="30d", show_default=True, metavar="AGE",
              help="How long NMC_AUDIT keeps records (90s, 12h, 30d; 0 = forever).")
@click.option("--registry-ttl", default=f"{DEFAULT_REGISTRY_TTL:g}s", show_default=True, metavar="AGE",
              help="How long a registry record lives without a refresh (longer than the nodes' registerinterval).")
@click.option("--jobs-max-age", default="7d", show_default=True, metavar="AGE",
              help="How long NMC_JOBS keeps a job's records and replies (90s, 12h, 30d).")
@click.option("--jobs-max-bytes", default=1024, show_default=True, metavar="MIB", type=click.IntRange(min=1),
              help="Size cap of NMC_JOBS in MiB: the oldest jobs go first when it is full.")
@click.option("--events-max-age", default="7d", show_default=True, metavar="AGE",
              help="How long NMC_EVENTS keeps lifecycle events (90s, 12h, 7d).")
@click.option("--events-max-bytes", default=256, show_default=True, metavar="MIB", type=click.IntRange(min=1),
              help="Size cap of NMC_EVENTS in MiB: the oldest events go first when it is full.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"audit": {...}, "registry": {...}, "jobs": {...}, "events": {...}}, each with "stream", '
                   '"subjects", "messages", "max_age_s", "replicas".')
@click.pass_context
def setup(ctx: click.Context, audit_max_age: str, registry_ttl: str, jobs_max_age: str, jobs_max_bytes: int,
          events_max_age: str, events_max_bytes: int, as_json: bool) -> None:
    """Create or configure nmc's streams and the registry bucket: run once, before any node starts.

    The streams: NMC_AUDIT (audit records), NMC_JOBS (jobs and the nodes' replies to them)
    and NMC_EVENTS (lifecycle events, docs/events.md).

    Only a certificate of role `operator` may do this: running nodes and services
    can look the streams up but never create or change them. Run it again to change
    a setting; records are kept. The replicas come from plugin.nats.jetstream_replicas
    and the bucket from plugin.registry.bucket of the config in use.

    \b
    Example:
      nmc --config operator.cfg ops setup
      nmc ops setup --audit-max-age 90d --registry-ttl 10m --json
      nmc ops setup --jobs-max-age 30d --jobs-max-bytes 4096
      nmc ops setup --events-max-age 7d --events-max-bytes 512
    """
    wanted = {"audit_max_age": _seconds(audit_max_age, "--audit-max-age", zero=True),
              "registry_ttl": _seconds(registry_ttl, "--registry-ttl", zero=False),
              "jobs_max_age": _seconds(jobs_max_age, "--jobs-max-age", zero=False),
              "jobs_max_bytes": jobs_max_bytes * 1024 * 1024,
              "events_max_age": _seconds(events_max_age, "--events-max-age", zero=False),
              "events_max_bytes": events_max_bytes * 1024 * 1024}
    debug = bool((ctx.find_root().obj or {}).get("debug"))
    config = load_client_config(ctx)
    try:
        layout = JetStreamSetup.from_config(config, **wanted)
    except (SettingsError, ValueError) as exc:
        raise click.ClickException(reason_of(exc)) from exc

    try:
        result = asyncio.run(setup_as(config, layout))
    except NmcError as exc:  # ConfigError (SettingsError), SetupError, ...
        if debug:
            raise
        raise click.ClickException(reason_of(exc)) from exc
    except KeyboardInterrupt:
        sys.exit(130)
    shown = {"audit": result.audit, "registry": result.registry}
    if result.jobs is not None:
        shown["jobs"] = result.jobs
    if result.events is not None:
        shown["events"] = result.events
    if as_json:
        click.echo(json.dumps({what: {"stream": info.config.name, "subjects": list(info.config.subjects or []),
                                      "messages": info.state.messages, "max_age_s": info.config.max_age or 0,
                                      "replicas": info.config.num_replicas or 1} for what, info in shown.items()}))
        return
    for info in shown.values():
        age = f"{info.config.max_age:g}s" if info.config.max_age else "forever"
        click.echo(f"stream {info.config.name}: subjects {', '.join(info.config.subjects or [])}, "
                   f"{info.state.messages} records, kept {age}, {info.config.num_replicas or 1} replica(s), "
                   "no rollups, purges or deletes")
