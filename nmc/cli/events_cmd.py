"""`nmc events watch|query`: the fleet's lifecycle events, live or from NMC_EVENTS, verified (docs/events.md)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import click

from nmc.cli.common import build_filter, connect_client, filter_options, load_client_config, run
from nmc.protocol.events import EVENT_KINDS

__all__ = ["events"]

_KINDS = click.Choice(sorted(EVENT_KINDS))


def _when(text: str) -> datetime:
    from nmc.cli.audit_cmd import parse_when

    return parse_when(text, datetime.now(timezone.utc))


def _summary(data: Mapping[str, Any], kind: str) -> str:
    """The interesting part of an event's data, on one line."""
    if kind == "startup":
        return f"version {data.get('version')}, {len(data.get('agents') or ())} agents, {len(data.get('facts') or {})} facts"
    if kind == "facts_changed":
        return "changed: " + ", ".join(data.get("changed") or ())
    if kind == "shutdown":
        return f"{data.get('reason')} after {data.get('uptime_s')}s"
    if kind == "alive":
        return f"up {data.get('uptime_s')}s"
    if kind == "puppet_run":
        return (f"{data.get('status')}, {data.get('changed_resources')} changed, {data.get('failed_resources')} "
                f"failed, {data.get('duration_s')}s")
    if kind == "policy_reloaded":
        return f"{data.get('policies')} policies, {len(data.get('errors') or ())} errors"
    if kind == "audit_backlog":
        return f"{data.get('pending')} records pending (threshold {data.get('threshold')})"
    return json.dumps(dict(data), sort_keys=True)[:200]


def _line(seen: Any, as_json: bool) -> str:
    event = seen.event
    if as_json:
        obj = event.to_dict() if event is not None else {"subject": seen.subject}
        if not seen.verified:
            obj = {**obj, "verified": False, "refused": seen.refused}
        return json.dumps(obj, sort_keys=False)
    mark = "" if seen.verified else f"UNVERIFIED ({seen.refused}) "
    if event is None:
        return f"{mark}{seen.subject}"
    return f"{mark}{event.to_dict()['time']} {event.identity} {event.kind} {_summary(event.data, event.kind)}"


def _run(ctx: click.Context, coro: Any) -> None:
    """Run it; Ctrl-C is a normal end here, said nothing about (nmc.cli.common.run)."""
    run(ctx, lambda: coro, say_interrupted=False)


@click.group("events")
def events() -> None:
    """The fleet's lifecycle events: startups, shutdowns, alive, facts changed, and more.

    Nodes, the policy service and the audit service publish signed CloudEvents 1.0 on
    nmc.events.<collective>.<kind>.<identity>; NMC_EVENTS keeps them (nmc ops setup).
    Only events whose signature, signer role and identity check out are shown as genuine.

    \b
    Examples:
      nmc events watch
      nmc events watch --type facts_changed -F role=web --json
      nmc events query --since 1h --type startup
    """


def _filter_of(kw: dict[str, Any]) -> Any:
    from nmc.protocol.filter import MatchAll, parse

    expr = build_filter(kw.pop("facts"), kw.pop("classes"), kw.pop("identities"), kw.pop("agents"),
                        kw.pop("compound"), kw.pop("combined"))
    tree = parse(expr) if expr else None
    return None if tree is None or isinstance(tree, MatchAll) else tree


@events.command("watch")
@click.option("--type", "-t", "kinds", multiple=True, type=_KINDS, help="Only events of this kind (repeatable).")
@click.option("--collective", default=None, metavar="NAME",
              help="Only this collective's events [default: main_collective of the config].")
@filter_options
@click.option("--unverified", is_flag=True,
              help="Also show events that fail verification, marked UNVERIFIED (never shown as genuine).")
@click.option("--json", "as_json", is_flag=True, help="One CloudEvents JSON object per line.")
@click.pass_context
def watch(ctx: click.Context, kinds: tuple[str, ...], collective: str | None, unverified: bool, as_json: bool,
          **flags: Any) -> None:
    """Show lifecycle events as they happen, until interrupted.

    Filters (-F, -C, -A, -I, -S) select nodes by what is known of the event's identity: its
    registry record, updated by the facts that startup and facts_changed events carry. Once
    the subscription is in place a line "watching SUBJECT" goes to standard error.

    \b
    Examples:
      nmc events watch
      nmc events watch --type startup --type shutdown
      nmc events watch -F country=de --type facts_changed --json
    """
    tree = _filter_of(flags)
    _run(ctx, _watch(ctx, kinds, collective, tree, unverified, as_json))


async def _watch(ctx: click.Context, kinds: tuple[str, ...], collective: str | None, tree: Any, unverified: bool,
                 as_json: bool) -> None:
    from nmc.client.events import FactView, watch_events
    from nmc.ops.config.settings import client_settings, event_verifier

    config = load_client_config(ctx)
    verifier = event_verifier(config)
    collective = collective or client_settings(config).collective
    nc = await connect_client(config, name="nmc events")
    try:
        view = FactView(nc, collective, bucket=config.get("plugin.registry.bucket") or "nmc_registry")
        if tree is not None:
            await view.load()

        def ready(subject: str) -> None:
            click.echo(f"watching {subject}", err=True)

        def refused(seen: Any) -> None:
            if not unverified:
                click.echo(f"nmc events: not shown: an event on {seen.subject} is not genuine: {seen.refused}",
                           err=True)

        async for seen in watch_events(nc, verifier, collective=collective, kinds=kinds, unverified=unverified,
                                       on_refused=refused, on_ready=ready):
            if tree is not None and (seen.event is None or not await view.matches(tree, seen.event)):
                continue
            click.echo(_line(seen, as_json))
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


@events.command("query")
@click.option("--since", default="1h", show_default=True, metavar="WHEN",
              help="Events stored since: an age (90s, 15m, 2h, 7d), an RFC 3339 time or unix seconds.")
@click.option("--until", default=None, metavar="WHEN", help="Events stored until (same forms as --since).")
@click.option("--type", "-t", "kind", type=_KINDS, default=None, help="Only events of this kind.")
@click.option("--identity", "identity", default=None, metavar="IDENTITY", help="Only this identity's events.")
@click.option("--collective", default=None, metavar="NAME",
              help="Only this collective's events [default: main_collective of the config].")
@click.option("--unverified", is_flag=True,
              help="Also show events that fail verification, marked UNVERIFIED (never shown as genuine).")
@click.option("--json", "as_json", is_flag=True, help="One CloudEvents JSON object per line.")
@click.pass_context
def query(ctx: click.Context, since: str, until: str | None, kind: str | None, identity: str | None,
          collective: str | None, unverified: bool, as_json: bool) -> None:
    """Show the events NMC_EVENTS keeps, oldest first.

    The stream keeps events as long as the operator set (nmc ops setup --events-max-age).
    Events are best-effort: one published while the broker was away is not there.

    \b
    Examples:
      nmc events query --since 1h --type startup
      nmc events query --since 2025-11-25T10:00:00Z --until 2025-11-25T11:00:00Z --json
      nmc events query --identity web1.example.com --since 7d
    """
    start, end = _when(since), _when(until) if until else None
    _run(ctx, _query(ctx, start, end, kind, identity, collective, unverified, as_json))


async def _query(ctx: click.Context, since: datetime, until: datetime | None, kind: str | None,
                 identity: str | None, collective: str | None, unverified: bool, as_json: bool) -> None:
    from nmc.client.events import query_events
    from nmc.ops.config.settings import client_settings, event_verifier

    config = load_client_config(ctx)
    verifier = event_verifier(config)
    collective = collective or client_settings(config).collective
    refused: list[str] = []
    nc = await connect_client(config, name="nmc events")
    try:
        async for seen in query_events(nc, verifier, collective=collective, kind=kind, identity=identity,
                                       since=since, until=until, unverified=unverified,
                                       on_refused=lambda seen: refused.append(seen.refused or "")):
            click.echo(_line(seen, as_json))
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    if refused and not unverified:
        click.echo(f"nmc events: {len(refused)} event(s) in NMC_EVENTS not shown: not genuine (first: {refused[0]}); "
                   "--unverified shows them marked", err=True)
