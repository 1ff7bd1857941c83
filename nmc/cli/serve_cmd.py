"""`nmc serve node|policy|audit|console`: the daemons, in the foreground for systemd or a terminal."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from nats.errors import NoServersError

from nmc.errors import NmcError
from nmc.ops.config.files import Config, load_config
from nmc.transport.logs import configure_logging
from nmc.ops.daemon.serve import (
    audit_config_path,
    build_audit_service,
    build_node,
    build_policy_service,
    policy_config_path,
    run_audit_service,
    catch_stop_signals,
    console_config_path,
    run_nodes,
    run_policy_service,
    server_config_path,
    service_metrics,
)
from nmc.services.replaylog import ReplayLogError

__all__ = ["serve"]

_F = Callable[..., Any]


def _daemon_config(path: Path | None, log_format: str | None) -> Config:
    """Load a daemon's config and set up its logs: JSON unless stderr is a terminal, to `logfile` if set."""
    try:
        config = load_config(path, kind="server")
        fmt = log_format or os.environ.get("NMC_LOG_FORMAT") or (
            "console" if sys.stderr.isatty() else "json")
        logfile = config.get_path("logfile")
        stream = open(logfile, "a", buffering=1, encoding="utf-8") if logfile else None  # noqa: SIM115 - lives as long as the daemon
        configure_logging(json=fmt == "json", level=config.get("loglevel") or "info", stream=stream)
    except (NmcError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    return config


def _daemon_options(filename: str, env_var: str) -> Callable[[_F], _F]:
    """--config (default: $env_var, then /etc/nmc/filename) and --log-format, on every `nmc serve` command."""

    def add(fn: _F) -> _F:
        fn = click.option("--log-format", type=click.Choice(["json", "console"]), default=None,
                          help="Log format (default: json unless stderr is a terminal).")(fn)
        return click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False),
                            help=f"{filename} (default: {env_var}, then /etc/nmc/{filename}).")(fn)

    return add


@click.group()
def serve() -> None:
    """Run nmc daemons in the foreground (for systemd or a terminal).

    Each serves Prometheus metrics at http://127.0.0.1:PORT/metrics when its
    config sets plugin.prometheus.port (docs/metrics.md).

    \b
    Example:
      nmc serve node --config /etc/nmc/server.cfg
      nmc serve policy --config /etc/nmc/policy.cfg
      nmc serve audit --config /etc/nmc/audit.cfg
      nmc serve console --config /etc/nmc/console.cfg
      NMC_PLUGIN__PROMETHEUS__PORT=9464 nmc serve node   # metrics on http://127.0.0.1:9464/metrics
    """


@serve.command("node")
@_daemon_options("server.cfg", "NMC_SERVER_CONFIG")
def serve_node(config_path: str | None, log_format: str | None) -> None:
    """Run the node daemon: one `nmc-node` NATS micro service answering requests for this machine.

    SIGHUP re-collects facts and classes at once (they are also refreshed every
    fact_refresh_interval seconds); SIGTERM/SIGINT stop it after running actions finish.

    With plugin.prometheus.port set it serves Prometheus metrics (requests by
    agent/action/status, latency, refusals, authorization, audit spool, NATS
    connection, event-loop lag) on 127.0.0.1 unless plugin.prometheus.bind says
    otherwise; see docs/metrics.md.

    \b
    Example:
      nmc serve node --config /etc/nmc/server.cfg
      NMC_PLUGIN__PROMETHEUS__PORT=9464 nmc serve node --config /etc/nmc/server.cfg
      curl -s http://127.0.0.1:9464/metrics | grep nmc_node_requests_total
    """
    path = server_config_path(config_path)
    config = _daemon_config(path, log_format)
    asyncio.run(_serve(config))


async def _serve(config: Config) -> None:
    # One event loop for collecting facts (facter runs as a subprocess of it) and for serving.
    stop = catch_stop_signals()  # a signal while facts are collected stops the node once started
    try:
        node = await build_node(config)
    except (NmcError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        await run_nodes([(node, config)], stop=stop)
    except ReplayLogError as exc:  # no record of the requests it runs: it must not serve
        raise click.ClickException(f"security.replay_file: {exc.reason} "
                                   f"(set at {config.origin('security.replay_file')})") from exc


@serve.command("policy")
@_daemon_options("policy.cfg", "NMC_POLICY_CONFIG")
def serve_policy(config_path: str | None, log_format: str | None) -> None:
    """Run the action-policy service: `nmc-policy`, answering the nodes' authorization questions.

    Reads <authz.policydir>/<agent>.policy, default.policy and groups; re-reads
    them when they change (SIGHUP: at once) and tells the nodes to drop cached
    decisions. Signs every answer with plugin.security.cert_file, whose name
    the nodes list in authz.signers. Run two or more for high availability:
    they share one queue group. Logs every decision.

    \b
    Example:
      nmc serve policy --config /etc/nmc/policy.cfg
      NMC_PLUGIN__PROMETHEUS__PORT=9465 nmc serve policy   # nmc_policy_decisions_total on :9465/metrics
    """
    _run_service(_daemon_config(policy_config_path(config_path), log_format), "policy", build_policy_service,
                 run_policy_service)


@serve.command("audit")
@_daemon_options("audit.cfg", "NMC_AUDIT_CONFIG")
def serve_audit(config_path: str | None, log_format: str | None) -> None:
    """Run the audit service: `nmc-audit`, writing every audit record of the fleet once.

    Reads the JetStream stream NMC_AUDIT record by record (no consumer) and
    writes each genuine record to audit.file (JSON lines, or audit.format =
    mcollective; rotated at audit.rotate_bytes) and, with audit.syslog, to
    syslog (RFC 5424). Its position in the stream is saved to
    audit.position_file (default <audit.file>.position) once the records
    before it are written; a restart resumes there and drops duplicates.
    The operator creates the stream (nmc audit setup).

    \b
    Example:
      nmc serve audit --config /etc/nmc/audit.cfg
      NMC_PLUGIN__PROMETHEUS__PORT=9466 nmc serve audit    # nmc_audit_service_* on :9466/metrics
    """
    _run_service(_daemon_config(audit_config_path(config_path), log_format), "audit", build_audit_service,
                 run_audit_service)


def _run_service(config: Config, kind: str, build: Callable[[Config], Any],
                 run: Callable[[Any, Any], Awaitable[None]]) -> None:
    """Build a service daemon (and its metrics endpoint, when configured) and run it; what goes wrong is one line."""
    try:
        service = build(config)
        metrics = service_metrics(config, kind, service)
    except (NmcError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        asyncio.run(run(service, metrics))
    except NmcError as exc:  # e.g. the audit service's file or syslog (SinkError)
        raise click.ClickException(str(exc)) from exc
    except (OSError, NoServersError) as exc:
        raise click.ClickException(f"cannot connect to {', '.join(service.settings.servers)}: {exc}") from exc


@serve.command("console")
@_daemon_options("console.cfg", "NMC_CONSOLE_CONFIG")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to listen on (the console needs no TLS on loopback; elsewhere use --tls-cert or a TLS "
                   "proxy).")
@click.option("--port", type=click.IntRange(0, 65535), default=8470, show_default=True, help="HTTP port (0: any free one).")
@click.option("--columns", default=None, metavar="FACT,...",
              help="Facts shown as the Fleet page's columns and counted (default: role,country,operatingsystem,"
                   "environment).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Serve HTTPS with this server certificate (PEM) and admit people's client certificates of the "
                   "fleet CA (roles user, auditor); config: plugin.console.tls_cert.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The key of --tls-cert (config: plugin.console.tls_key).")
@click.option("--allow-cert", "allow_certs", multiple=True, metavar="NAME",
              help="With TLS: admit only this client certificate name (repeatable; config: "
                   "plugin.console.allow_certs).")
@click.option("--no-token", is_flag=True, default=False,
              help="With TLS: no access token, client certificates only.")
@click.option("--quiet-after", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
              metavar="SECONDS", help="Mark nodes whose registry record is older as quiet (2 x the nodes' "
                                      "registerinterval), as nmc find --quiet-after.")
def serve_console(config_path: str | None, log_format: str | None, bind: str, port: int, columns: str | None,
                  tls_cert: Path | None, tls_key: Path | None, allow_certs: tuple[str, ...], no_token: bool,
                  quiet_after: float) -> None:
    """Run the read-only web console: Fleet, Node, Jobs, Audit and Events pages and a JSON API.

    Reads only from NATS (the registry, NMC_JOBS, NMC_AUDIT, NMC_EVENTS) with a
    certificate of role `console`, which the broker lets read those and nothing
    else: the console can run nothing. Prints its URL with a random access
    token at start (http://127.0.0.1:8470/?token=...); every page and API call
    without it is refused. With --tls-cert and --tls-key it serves HTTPS and a
    person's client certificate of the fleet CA (role user or auditor, on
    --allow-cert if given) opens it as well as the token. See docs/console.md.

    \b
    Example:
      nmc serve console --config /etc/nmc/console.cfg
      nmc serve console --port 0 --columns role,os.release.major,dc
      nmc serve console --tls-cert web.pem --tls-key web.key --allow-cert alice --no-token
    """
    config = _daemon_config(console_config_path(config_path), log_format)
    chosen = tuple(c.strip() for c in (columns or "").split(",") if c.strip())
    access = {"tls_cert": tls_cert, "tls_key": tls_key, "allow_certs": allow_certs, "use_token": not no_token,
              "quiet_after": quiet_after}
    asyncio.run(_serve_console(config, bind, port, chosen, access))


async def _serve_console(config: Config, bind: str, port: int, columns: tuple[str, ...],
                         access: dict[str, Any] | None = None) -> None:
    from nmc.ops.console.data import DEFAULT_COLUMNS
    from nmc.ops.console.service import build_console
    from nmc.ops.daemon.serve import unless_stopped, wait_for_signal

    stop = catch_stop_signals()
    try:
        console = build_console(config, bind=bind, port=port, columns=columns or DEFAULT_COLUMNS, **(access or {}))
    except NmcError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        if not await unless_stopped(console.start(), stop):
            return
    except NmcError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # the port is taken, the address is not ours
        await console.stop()
        raise click.ClickException(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from exc
    try:
        click.echo(f"nmc console: open {console.url}", err=False)
        sys.stdout.flush()
        await wait_for_signal(stop=stop)
    finally:
        await console.stop()
