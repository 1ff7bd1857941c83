"""`nmc audit ...`: read the fleet's audit trail straight from the NMC_AUDIT stream (no audit service needed)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from nmc.audit.errors import AuditStreamError
from nmc.audit.formats import json_line, text_line
from nmc.audit.reader import AuditQuery, read_records
from nmc.audit.stream import STREAM
from nmc.cli.common import connect_client, load_client_config, run
from nmc.ops.config.files import Config
from nmc.ops.broker.jetstream import SetupError, setup_audit_stream
from nmc.ops.config.settings import jetstream_replicas, parse_duration, record_verifier

__all__ = ["audit", "parse_when"]


def parse_when(text: str, now: datetime) -> datetime:
    """`--since`/`--until`: an RFC 3339 / ISO 8601 time (local time without an offset), unix seconds, or an age (2h, 7d)."""
    text = text.strip()
    with contextlib.suppress(ValueError):
        return datetime.fromtimestamp(float(text), timezone.utc)
    age = parse_duration(text)
    if age is not None:
        return now - timedelta(seconds=age)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a time (2025-11-25T10:00:00Z, 2025-11-25, unix seconds) "
                                 "nor an age (90s, 15m, 2h, 7d)") from None
    return stamp if stamp.tzinfo is not None else stamp.astimezone()


@contextlib.asynccontextmanager
async def _connect(config: Config) -> AsyncIterator[Any]:
    nc = await connect_client(config, name="nmc audit")  # once connected, `tail -f` rides out broker restarts
    try:
        yield nc
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def _run(ctx: click.Context, coro: Any) -> None:
    """Run it; Ctrl-C is a normal end here, said nothing about (nmc.cli.common.run)."""
    run(ctx, lambda: coro, say_interrupted=False)


async def _print(ctx: click.Context, query: AuditQuery, *, last: int | None, follow: bool, as_json: bool,
                 unverified: bool) -> int:
    config = load_client_config(ctx)
    verifier = record_verifier(config)
    shown = 0
    refused: list[tuple[str, int]] = []

    def on_refused(reason: str, seq: int) -> None:
        refused.append((reason, seq))
        if follow and not unverified:  # no end to print a summary at: say it as it happens
            click.echo(f"nmc audit: not shown: stream message {seq} is not a genuine record: {reason}", err=True)

    async with _connect(config) as nc:
        async for record in read_records(nc.jetstream(), query, verifier=verifier, last=last, follow=follow,
                                         unverified=unverified, on_refused=on_refused):
            click.echo(json_line(record) if as_json else text_line(record))
            shown += 1
            if follow:
                sys.stdout.flush()  # a pipe (| grep) sees each record as it comes
    if refused and not follow and not unverified:
        first_reason, first_seq = refused[0]
        click.echo(f"nmc audit: {len(refused)} record(s) in {STREAM} not shown: not signed by the node they name "
                   f"(e.g. stream message {first_seq}: {first_reason}); --unverified shows them, marked", err=True)
    return shown


_UNVERIFIED = click.option("--unverified", is_flag=True,
                           help="Also show records that fail verification (unsigned, forged, revoked signer), "
                                'marked UNVERIFIED (--json: "verified": false and the reason in "refused").')


@click.group()
def audit() -> None:
    """The audit trail: who ran what, where, when, allowed or not, and how it ended.

    \b
    Example:
      nmc audit tail -n 20
      nmc audit query --caller cert=alice --since 2h
      nmc audit setup --max-age 90d
    """


@audit.command("tail")
@click.option("-n", "--lines", "count", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many of the newest records to show first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records as they arrive (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as the audit file has them.")
@_UNVERIFIED
@click.pass_context
def tail(ctx: click.Context, count: int, follow: bool, as_json: bool, unverified: bool) -> None:
    """Show the newest audit records, like tail(1); with -f, follow the stream.

    Reads the NMC_AUDIT stream directly: works with no audit service running.
    Shows only records signed by the node they name; says on stderr how many
    others it left out (--unverified shows them, marked).

    \b
    Example:
      nmc audit tail -n 20
      nmc audit tail -f --json | jq .
    """
    _run(ctx, _print(ctx, AuditQuery(), last=count, follow=follow, as_json=as_json, unverified=unverified))


@audit.command("query")
@click.option("--caller", help="Only this caller, e.g. cert=alice.")
@click.option("--agent", help="Only this agent.")
@click.option("--action", help="Only this action.")
@click.option("--identity", "-I", help="Only records of this node.")
@click.option("--collective", "-T", help="Only this collective (default: all).")
@click.option("--phase", type=click.Choice(["decision", "result"]), help="Only decisions or only results.")
@click.option("--since", metavar="TIME|AGE", help="From this time (2025-11-25T10:00:00Z, 2025-11-25) or age (2h, 7d).")
@click.option("--until", metavar="TIME|AGE", help="Up to this time or age.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as the audit file has them.")
@_UNVERIFIED
@click.pass_context
def query(ctx: click.Context, caller: str | None, agent: str | None, action: str | None, identity: str | None,
          collective: str | None, phase: str | None, since: str | None, until: str | None, as_json: bool,
          unverified: bool) -> None:
    """Find audit records by caller, agent, action, node and time.

    Every option given must match. Reads the NMC_AUDIT stream directly (only
    as far back as the stream keeps records, audit.max_age); the audit
    service's files hold the long-term trail. Records not signed by the node
    they name are left out (counted on stderr) unless --unverified.

    \b
    Example:
      nmc audit query --caller cert=alice --since 2h
      nmc audit query --agent puppet --action runonce -I web1.example.com --json
    """
    now = datetime.now(timezone.utc)
    q = AuditQuery(caller=caller, agent=agent, action=action, identity=identity, collective=collective, phase=phase,
                   since=_when(since, now, "--since"), until=_when(until, now, "--until"))
    _run(ctx, _print(ctx, q, last=None, follow=False, as_json=as_json, unverified=unverified))


def _when(text: str | None, now: datetime, option: str) -> datetime | None:
    """parse_when for one option; a bad value names the option it came from."""
    if not text:
        return None
    try:
        return parse_when(text, now)
    except click.BadParameter as exc:
        exc.param_hint = option
        raise


@audit.command("setup")
@click.option("--max-age", default="30d", show_default=True, metavar="AGE",
              help="How long the stream keeps records (90s, 12h, 30d; 0 = forever).")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"stream", "subjects", "messages", "max_age_s" (0: forever), "replicas"} instead of text.')
@click.pass_context
def setup(ctx: click.Context, max_age: str, as_json: bool) -> None:
    """Create the NMC_AUDIT stream (or set its max age) before any node or audit service runs.

    Needs a certificate of role `operator` (no running daemon may create or change
    a stream); `nmc ops setup` makes the registry bucket too.

    \b
    Example:
      nmc audit setup --max-age 90d
      nmc audit setup --json | jq .messages
      nmc --config operator.cfg audit setup --max-age 90d
    """
    seconds = parse_duration(max_age)
    if seconds is None:
        raise click.BadParameter(f"{max_age!r} is not an age (90s, 12h, 30d, 0)", param_hint="--max-age")

    async def go() -> None:
        config = load_client_config(ctx)
        async with _connect(config) as nc:
            try:
                info = await setup_audit_stream(nc.jetstream(), seconds, replicas=jetstream_replicas(config))
            except SetupError as exc:
                raise AuditStreamError(exc.reason) from exc
        if as_json:
            click.echo(json.dumps({"stream": STREAM, "subjects": list(info.config.subjects or []),
                                   "messages": info.state.messages, "max_age_s": info.config.max_age or 0,
                                   "replicas": info.config.num_replicas or 1}))
            return
        age = "forever" if not info.config.max_age else _age(info.config.max_age)
        click.echo(f"stream {STREAM}: subjects {', '.join(info.config.subjects or [])}, {info.state.messages} "
                   f"records, kept {age}, {info.config.num_replicas or 1} replica(s)")

    _run(ctx, go())


def _age(seconds: float) -> str:
    """90d, 12h, 15m or 42s: the largest unit that divides `seconds`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
