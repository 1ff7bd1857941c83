"""`nmc dev up`: the whole fleet on this machine with one command."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from nmc.errors import reason_of
from nmc.audit.errors import AuditStreamError, SinkError
from nmc.ops.broker.server import BrokerError
from nmc.ops.config.files import Config, ConfigError
from nmc.ops.fleet.dev import DEFAULT_METRICS_PORT, DevFleet, DevLayout, FleetBusyError, FleetLock, default_dev_dir
from nmc.ops.broker.jetstream import SetupError, setup_as
from nmc.transport.logs import configure_logging
from nmc.ops.pki import PKIError
from nmc.ops.daemon.serve import (build_audit_service, build_node, build_policy_service, catch_stop_signals, run_nodes,
                           service_metrics, unless_stopped)
from nmc.services.facts import FactError
from nmc.transport import ConnectError
from nmc.ops.config.settings import SettingsError
from nmc.protocol.unsigned import UnsignedConfigError, parse_unsigned_actions

__all__ = ["dev"]


@click.group()
def dev() -> None:
    """A throwaway local fleet for trying nmc and for development.

    \b
    Example:
      nmc dev up --nodes 5
    """


@dev.command("up")
@click.option("--nodes", "-n", type=click.IntRange(1, 500), default=5, show_default=True, help="How many nodes.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="State directory (default: ~/.local/state/nmc/dev, where `nmc` finds its client.cfg).")
@click.option("--port", type=click.IntRange(0, 65535), default=4222, show_default=True,
              help="Broker port on 127.0.0.1 (a free one is used if it is taken).")
@click.option("--verbose", "-v", is_flag=True, help="Show the nodes' request logs.")
@click.option("--json", "as_json", is_flag=True,
              help='Once every node is up, print one JSON line {"broker", "client_config", "nodes", "audit_file", '
                   '"policy_dir", "metrics", "console"} instead of the text (for scripts waiting on it).')
@click.option("--unsigned-actions", "unsigned", default="", metavar="AGENT.ACTION,...",
              help="Read-only actions the nodes answer without a signature (e.g. for `nats req`), and a "
                   "default.policy line allowing caller unsigned=nats to run them; off by default.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=DEFAULT_METRICS_PORT, show_default=True,
              help="Prometheus metrics of every node and both services, on 127.0.0.1 (a free port if it is "
                   "taken); docs/metrics.md.")
@click.option("--no-metrics", is_flag=True, help="Serve no metrics endpoint.")
@click.option("--console-port", type=click.IntRange(0, 65535), default=8470, show_default=True,
              help="The read-only web console on 127.0.0.1 (a free port if it is taken); its URL with the "
                   "access token is printed; docs/console.md.")
@click.option("--no-console", is_flag=True, help="Start no web console.")
def up(nodes: int, directory: Path | None, port: int, verbose: bool, as_json: bool, unsigned: str,
       metrics_port: int, no_metrics: bool, console_port: int, no_console: bool) -> None:
    """Start a broker, a throwaway CA and N nodes with varied facts; Ctrl-C stops everything.

    Writes a client.cfg that `nmc` finds on its own, so a second shell can run
    `nmc ping` straight away.

    \b
    Example:
      nmc dev up --nodes 5
      nmc dev up --nodes 3 --port 0 --json     # one ready line: {"broker": "tls://127.0.0.1:...", ...}
      nmc dev up --unsigned-actions rpcutil.ping,rpcutil.get_fact   # for `nats req` (docs/nats-tools.md)
      nmc dev up --metrics-port 9464   # then: curl -s http://127.0.0.1:9464/metrics | grep nmc_node_requests
      nmc dev up --no-console          # no web console (docs/console.md)
    """
    layout = DevLayout(directory or default_dev_dir())
    configure_logging(json=False, level="info" if verbose else "warning")
    actions = tuple(a.strip() for a in unsigned.split(",") if a.strip())
    try:
        parse_unsigned_actions(actions)
    except UnsignedConfigError as exc:
        raise click.BadParameter(exc.reason, param_hint="--unsigned-actions") from exc
    lock = FleetLock(layout.root)
    try:
        lock.acquire()  # before anything is written: a running fleet's directory is never touched
    except (FleetBusyError, OSError) as exc:
        raise click.ClickException(reason_of(exc)) from exc
    if threading.current_thread() is threading.main_thread():
        # Until asyncio takes the signals over, SIGTERM unwinds like Ctrl-C: the broker is stopped.
        signal.signal(signal.SIGTERM, _interrupt)
    broker, interrupted, fleet = None, False, None
    try:
        if directory is not None:
            click.echo(f"dev fleet in {layout.root} (use NMC_CONFIG={layout.client_cfg} in other shells)", err=True)
        fleet = DevFleet(layout, nodes=nodes, port=port, unsigned_actions=actions,
                         metrics_port=None if no_metrics else metrics_port)
        broker, configs = fleet.prepare()
        metrics_url = fleet.metrics.url if fleet.metrics is not None else None
        console = None
        if not no_console:
            from nmc.ops.console.service import build_console  # aiohttp's server and Jinja2: only when asked

            console = build_console(fleet.console_config(), port=console_port)
        announce = _announce_json if as_json else _announce
        # While asyncio.run builds its loop a KeyboardInterrupt would hit a half-made loop (a traceback
        # from its __del__): from here a signal is only noted, and _run_fleet acts on it first thing.
        early: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda signum, frame: early.append(signum))
        asyncio.run(_run_fleet(configs, lambda ids: announce(layout, broker.url, ids, directory is not None,
                                                             metrics_url, console.url if console else None),
                               audit_config=fleet.audit_config(), policy_config=fleet.policy_config(),
                               operator_config=fleet.operator_config(), early=early, console=console))
    except _START_ERRORS as exc:
        raise click.ClickException(f"the dev fleet did not start: {getattr(exc, 'reason', None) or exc}") from exc
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C or SIGTERM before the fleet was up: everything started is stopped below
    finally:
        if broker is not None:
            broker.stop()
        if fleet is not None:
            fleet.stop_metrics()
        lock.release()
        click.echo("dev fleet stopped", err=True)
    if interrupted:
        sys.exit(130)


# Whatever stops the fleet from starting: one line, and everything started is stopped again.
_START_ERRORS = (BrokerError, PKIError, SettingsError, ConfigError, ConnectError, FactError, AuditStreamError,
                 SetupError, SinkError, OSError)

# How long a dev daemon may take to connect to the fleet's own broker before start-up gives up.
_CONNECT_GIVE_UP = 20.0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _run_fleet(configs: Sequence[Config], announce: Callable[[list[str]], None], *,
                     audit_config: Config | None = None, policy_config: Config | None = None,
                     operator_config: Config | None = None, early: Sequence[int] = (),
                     console: Any = None) -> None:
    stop = catch_stop_signals()  # from here on a signal at any stage of start-up stops what started
    if early:  # a signal that came while the loop was being made
        return
    # The operator's step first: only its certificate may create the audit stream and the registry bucket.
    if operator_config is not None and not await unless_stopped(
            setup_as(operator_config, give_up_after=_CONNECT_GIVE_UP), stop):
        return
    # The audit service next and last out, so it writes the nodes' final records.
    audit = build_audit_service(audit_config) if audit_config is not None else None
    audit_metrics = service_metrics(audit_config, "audit", audit) if audit_config is not None and audit else None
    try:
        if audit is not None and not await unless_stopped(audit.start(give_up_after=_CONNECT_GIVE_UP), stop):
            return
        if audit_metrics is not None:
            audit_metrics.start()
        if console is not None and not await _start_console(console, stop):
            return
        await _run_nodes_with_policy(configs, announce, policy_config, stop)
    finally:
        if console is not None:
            await console.stop()
        if audit is not None:
            await audit.stop()
        if audit_metrics is not None:
            audit_metrics.stop()


async def _start_console(console: Any, stop: asyncio.Event) -> bool:
    """Start the web console (nmc.ops.console.service.ConsoleService) on its port, or a free one if taken."""
    try:
        return await unless_stopped(console.start(give_up_after=_CONNECT_GIVE_UP), stop)
    except OSError:  # the port is taken (another dev fleet's console): any free one will do
        console.port = 0
        return await unless_stopped(console.start(give_up_after=_CONNECT_GIVE_UP), stop)


async def _run_nodes_with_policy(configs: Sequence[Config], announce: Callable[[list[str]], None],
                                 policy_config: Config | None, stop: asyncio.Event) -> None:
    # The policy service is up before the first node asks it, and stops only after the last node.
    policy = build_policy_service(policy_config) if policy_config is not None else None
    policy_metrics = service_metrics(policy_config, "policy", policy) if policy_config is not None and policy else None
    try:
        if policy is not None and not await unless_stopped(policy.start(give_up_after=_CONNECT_GIVE_UP), stop):
            return
        if policy_metrics is not None:
            policy_metrics.start()
        # Facts are collected in the loop that serves (build_node is async: facter and file reads stay off it).
        built = asyncio.ensure_future(asyncio.gather(*(build_node(cfg) for cfg in configs)))
        if not await unless_stopped(built, stop):
            return
        nodes = built.result()
        # Announced once every node serves and Ctrl-C is handled: scripts may use the fleet at once.
        await run_nodes(list(zip(nodes, configs)), ready=lambda: announce([n.identity for n in nodes]), stop=stop,
                        give_up_after=_CONNECT_GIVE_UP)
    finally:
        if policy is not None:
            await policy.stop()
        if policy_metrics is not None:
            policy_metrics.stop()


def _announce_json(layout: DevLayout, url: str, identities: list[str], custom_dir: bool,
                   metrics_url: str | None = None, console_url: str | None = None) -> None:
    """The ready line for scripts: one JSON object (click.echo flushes it, so a pipe sees it at once)."""
    click.echo(json.dumps({"broker": url, "client_config": str(layout.client_cfg),
                           "operator_config": str(layout.operator_cfg), "nodes": identities,
                           "audit_file": str(layout.audit_dir / "audit.jsonl"),
                           "policy_dir": str(layout.policy_dir / "policies"), "metrics": metrics_url,
                           "console": console_url}))


def _announce(layout: DevLayout, url: str, identities: list[str], custom_dir: bool,
              metrics_url: str | None = None, console_url: str | None = None) -> None:
    env = f"NMC_CONFIG={layout.client_cfg} " if custom_dir else ""
    click.echo(f"nmc dev fleet up: broker {url}, {len(identities)} nodes ({', '.join(identities)})")
    click.echo(f"client config: {layout.client_cfg}")
    click.echo(f"audit trail: {layout.audit_dir / 'audit.jsonl'} (or `nmc audit tail -f`)")
    click.echo(f"policies: {layout.policy_dir / 'policies'} (nmc-policy reloads them on change; `nmc policy lint`)")
    if metrics_url is not None:
        click.echo(f"metrics: {metrics_url} (Prometheus: every node, by its identity label, nmc-policy and "
                   f"nmc-audit; docs/metrics.md)")
    if console_url is not None:
        click.echo(f"console: {console_url} (read-only web console; docs/console.md)")
    click.echo("Try in another shell:")
    for cmd in ("nmc ping", "nmc find -F country=us", "nmc rpc rpcutil get_fact fact=role",
                "nmc rpc rpcutil inventory -I node1.example.net", "nmc jobs list", "nmc events watch",
                "nmc config show"):
        click.echo(f"  {env}{cmd}")
    click.echo("Press Ctrl-C to stop the fleet.", nl=True)
