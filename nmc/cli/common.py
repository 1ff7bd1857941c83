"""Shared pieces of fleet commands: filter flags, config lookup, connecting, error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import click
import nats.errors

from nmc.client.batch import BatchError, parse_batch
from nmc.client.discovery import DISCOVERY_METHODS, DiscoveryError, Targeting
from nmc.client.fleet import CallResult, FleetClient
from nmc.client.run import JobOptions, run_action
from nmc.client.session import connect_nats, fleet_session
from nmc.errors import NmcError
from nmc.ops.config.files import Config, ConfigError, find_client_config, load_config
from nmc.transport.logs import configure_logging, quiet_tls_eof_warning
from nmc.ops.config.settings import (
    SettingsError,
    client_servers,
    client_settings,
    connect_timeout,
    load_signer,
    load_verifier,
    tls_context,
)
from nmc.protocol.filter import FilterSyntaxError, combine
from nmc.transport import ConnectError

__all__ = ["EXIT_FAILED", "EXIT_NO_RESPONSE", "EXIT_OK", "EXIT_USAGE", "FILTER_FLAGS", "batch_options", "batch_progress", "batch_size", "build_filter", "call_from_flags", "client_session", "connect_client", "discover_and_call", "job_options", "say_job",
           "filter_options", "fleet_options", "load_client_config", "output_options", "quiet_tls_eof_warning", "run", "take_filter", "take_targeting",
           "targeting_options"]

EXIT_OK, EXIT_FAILED, EXIT_NO_RESPONSE, EXIT_USAGE = 0, 1, 2, 4
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def filter_options(fn: F) -> F:
    """MCollective's filter flags, on every fleet command."""
    opts = [
        click.option("-F", "--wf", "--with-fact", "facts", multiple=True, metavar="FACT=VALUE",
                     help="Match nodes by fact: = == != < > <= >= =~ or fact=/regex/; dotted paths reach into structured facts."),
        click.option("-C", "--wc", "--with-class", "classes", multiple=True, metavar="CLASS",
                     help="Match nodes with this configuration class (or /regex/)."),
        click.option("-I", "--wi", "--with-identity", "identities", multiple=True, metavar="IDENTITY",
                     help="Match a node by identity (or /regex/); repeat for several."),
        click.option("-A", "--wa", "--with-agent", "agents", multiple=True, metavar="AGENT",
                     help="Match nodes that have this agent."),
        click.option("-S", "--select", "compound", multiple=True, metavar="EXPR",
                     help='Compound filter, e.g. "(role=web or role=db) and not country=us".'),
        click.option("-W", "--with", "combined", multiple=True, metavar="'CLASS FACT=V ...'",
                     help="Classes and facts together, all must match."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def targeting_options(fn: F) -> F:
    """Discovery method and subset flags (MCollective's --dm, --nodes, --limit, -1)."""
    opts = [
        click.option("--discovery-method", "--dm", "discovery_method", type=click.Choice(DISCOVERY_METHODS),
                     default="auto", show_default=True,
                     help="auto: client.cfg's default_discovery_method (by default the registry when it lists any "
                          "node, else broadcast); broadcast: ask the fleet; registry: read the JetStream registry; "
                          "flatfile: --nodes FILE; stdin: identities or another nmc command's --json output on "
                          "standard input."),
        click.option("--nodes", "nodes_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="File of identities (one per line, or nmc --json output) for --dm flatfile."),
        click.option("--limit", "limit", metavar="N|N%", default=None,
                     help="Use only N (or N%) of the discovered nodes, chosen at random."),
        click.option("--limit-seed", "limit_seed", type=int, default=None,
                     help="Seed for --limit/--one, so the same nodes are chosen every time."),
        click.option("-1", "--one", "one", is_flag=True, help="Use only one of the discovered nodes."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def take_targeting(kw: dict[str, Any]) -> Targeting:
    """Pop the targeting flags from a command's kwargs; usage error when they do not fit."""
    method = kw.pop("discovery_method")
    nodes_file = kw.pop("nodes_file")
    if nodes_file is not None and method == "auto":
        method = "flatfile"  # --nodes alone means "these nodes", as in MCollective
    stdin_text = None
    if method == "stdin":
        stream = sys.stdin
        if stream.isatty():
            raise click.UsageError("--dm stdin reads identities from standard input, but it is a terminal")
        stdin_text = stream.read()
    try:
        return Targeting(method=method, nodes_file=nodes_file, stdin_text=stdin_text, limit=kw.pop("limit"),
                         limit_seed=kw.pop("limit_seed"), one=kw.pop("one"))
    except DiscoveryError as exc:
        raise click.UsageError(exc.reason) from exc


def batch_options(fn: F) -> F:
    """--batch N|N% and --batch-sleep: at most N nodes busy at once."""
    fn = click.option("--batch-sleep", type=click.FloatRange(min=0), default=0.0, show_default=True,
                      help="Seconds to pause between batches.")(fn)
    fn = click.option("--batch", metavar="N|N%", default=None,
                      help="Run on N (or N% of the) nodes at a time; the next batch starts when this one answered.")(fn)
    return fn


def batch_size(spec: str, total: int) -> int:
    """--batch as a node count; usage error when malformed."""
    try:
        return parse_batch(spec, total)
    except BatchError as exc:
        raise click.UsageError(exc.reason) from exc


def batch_progress() -> Callable[[int, int, Any], None] | None:
    """A one-line progress report per finished batch on a terminal (stderr), else None."""
    err = sys.stderr
    if not err.isatty():
        return None

    def report(done: int, total: int, part: Any) -> None:
        width = 30
        filled = width * done // total
        click.echo(f"\r * [{'=' * filled}{' ' * (width - filled)}] batch {done} / {total}", err=True,
                   nl=done == total)
    return report


def discover_and_call(ctx: click.Context, config: Config, targeting: Targeting, expr: str, agent: str,
                      action: str, data: Mapping[str, Any], *, timeout: float | None,
                      discovery_timeout: float | None, job: bool = False) -> CallResult | None:
    """Discover by the chosen method, then one request to exactly those nodes; None when nobody was found.

    `job`: record it as a job (unless client.cfg says jobs.enabled = false).
    """
    options = job_options(config) if job else None

    async def go() -> CallResult | None:
        async with client_session(config, timeout=timeout, discovery_timeout=discovery_timeout) as fc:
            return await run_action(fc, agent, action, data, filter_expr=expr, targeting=targeting, job=options)

    return run(ctx, go)


def say_job(job_id: str) -> None:
    """A job's id, on standard error before the results (they may take a while)."""
    click.echo(click.style(f"Job {job_id}", dim=True), err=True)


def job_options(config: Config, **kw: Any) -> JobOptions | None:
    """How a command that is a job records it: None when client.cfg turns jobs off (jobs.enabled = false)."""
    if config.get_bool("jobs.enabled", True) is False:
        return None
    return JobOptions(**kw)


def output_options(fn: F) -> F:
    """--json and the timeouts, shared by fleet commands."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")(fn)
    fn = click.option("--discovery-timeout", "--dt", type=click.FloatRange(min=0, min_open=True), default=None,
                      help="Seconds discovery waits at most (it ends earlier when replies stall).")(fn)
    fn = click.option("--timeout", "-t", type=click.FloatRange(min=0, min_open=True), default=None,
                      help="Seconds to wait for replies at most.")(fn)
    return fn


def fleet_options(fn: F) -> F:
    """The filter, targeting and output flags of a command that discovers, then asks the found nodes."""
    return filter_options(targeting_options(output_options(fn)))


FILTER_FLAGS = ("facts", "classes", "identities", "agents", "compound", "combined")


def take_filter(kw: dict[str, Any], *, agent: str | None = None) -> str:
    """Pop the filter flags from a command's kwargs into one expression; `agent` adds an implicit `-A agent`."""
    facts, classes, identities, agents, compound, combined = (kw.pop(key) for key in FILTER_FLAGS)
    if agent is not None:
        agents = (*agents, agent)
    return build_filter(facts, classes, identities, agents, compound, combined)


def call_from_flags(ctx: click.Context, flags: dict[str, Any], agent: str, action: str, data: Mapping[str, Any], *,
                    timeout: float | None, discovery_timeout: float | None,
                    filter_agent: str | None = None, job: bool = False) -> CallResult | None:
    """Discover with the command's filter and targeting flags, then one request to the found nodes (None: nobody)."""
    targeting = take_targeting(flags)
    return discover_and_call(ctx, load_client_config(ctx), targeting, take_filter(flags, agent=filter_agent), agent,
                             action, data, timeout=timeout, discovery_timeout=discovery_timeout, job=job)


def build_filter(facts: tuple[str, ...], classes: tuple[str, ...], identities: tuple[str, ...],
                 agents: tuple[str, ...], compound: tuple[str, ...], combined: tuple[str, ...]) -> str:
    """One canonical filter expression from all the flags; usage error on bad syntax."""
    try:
        return combine(facts=facts, classes=classes, identities=identities, agents=agents,
                       compound=compound + combined)
    except FilterSyntaxError as exc:
        raise click.UsageError(f"bad filter: {exc}") from exc


def load_client_config(ctx: click.Context) -> Config:
    """The client config: --config / NMC_CONFIG, else the usual places, else defaults."""
    obj = ctx.find_root().obj or {}
    explicit = obj.get("config_path")
    path = Path(explicit) if explicit else find_client_config(os.environ, Path.home())
    configure_logging(json=False, level="debug" if obj.get("debug") else "warning")
    quiet_tls_eof_warning()
    try:
        return load_config(path, kind="client")
    except ConfigError as exc:
        if obj.get("debug"):
            raise
        hint = " (given by --config or NMC_CONFIG)" if explicit and not Path(explicit).exists() else ""
        raise click.ClickException(f"{exc}{hint}") from exc


@contextlib.asynccontextmanager
async def client_session(config: Config, *, timeout: float | None = None,
                         discovery_timeout: float | None = None) -> AsyncIterator[FleetClient]:
    """The config's FleetClient (nmc.client.session.fleet_session); the command's timeouts override the config's."""
    settings = client_settings(config)
    overrides: dict[str, Any] = {}
    if timeout is not None:
        overrides["timeout"] = timeout
    if discovery_timeout is not None:
        overrides["discovery_timeout"] = discovery_timeout
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    signer, verifier = load_signer(config), load_verifier(config)
    servers, tls, deadline = client_servers(config), tls_context(config), connect_timeout(config)
    async with contextlib.AsyncExitStack() as stack:
        try:
            fc = await stack.enter_async_context(fleet_session(servers, signer=signer, verifier=verifier,
                                                               settings=settings, tls=tls,
                                                               connect_timeout=deadline))
        except ConnectError as exc:
            raise SettingsError(exc.reason) from exc
        yield fc


async def connect_client(config: Config, *, name: str) -> Any:
    """A bare NATS connection from the config (nmc.client.session.connect_nats), for commands that need no FleetClient."""
    try:
        return await connect_nats(client_servers(config), name=name, tls=tls_context(config),
                                  connect_timeout=connect_timeout(config))
    except ConnectError as exc:
        raise SettingsError(exc.reason) from exc


def run(ctx: click.Context, coro_fn: Callable[[], Awaitable[T]], *, say_interrupted: bool = True) -> T:
    """Run a command's coroutine, turning expected failures into one-line errors.

    `say_interrupted=False`: Ctrl-C is the normal end (`nmc audit tail -f`, `nmc events watch`).
    """
    debug = bool((ctx.find_root().obj or {}).get("debug"))
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except NmcError as exc:  # foreseen (a config, discovery, no responders...): its one line says what to change
        if debug:
            raise
        raise click.ClickException(str(exc)) from exc
    except nats.errors.ConnectionClosedError as exc:
        # Only when nats-py gave the connection up for good (e.g. the broker refused it on reconnection).
        if debug:
            raise
        raise click.ClickException("lost the connection to NATS and could not get it back; "
                                   "results so far are not shown") from exc
    except KeyboardInterrupt:
        if say_interrupted:
            click.echo("interrupted", err=True)
        sys.exit(130)
