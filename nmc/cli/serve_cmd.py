"""`nmc serve ...`: the daemons (node now; policy and audit services join this group)."""

from __future__ import annotations

import asyncio
import os

import click

from nmc.ops.config import Config, ConfigError, load_config
from nmc.ops.logs import configure_logging
from nmc.ops.serve import build_node, run_nodes, server_config_path
from nmc.ops.settings import SettingsError
from nmc.services.facts import FactError

__all__ = ["serve"]


@click.group()
def serve() -> None:
    """Run nmc daemons in the foreground (for systemd or a terminal)."""


@serve.command("node")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False),
              help="server.cfg (default: NMC_SERVER_CONFIG, then /etc/nmc/server.cfg).")
@click.option("--log-format", type=click.Choice(["json", "console"]), default=None,
              help="Log format (default: json unless stderr is a terminal).")
def serve_node(config_path: str | None, log_format: str | None) -> None:
    """Run the node daemon: one `nmc-node` NATS micro service answering requests for this machine.

    SIGHUP re-collects facts and classes at once (they are also refreshed every
    fact_refresh_interval seconds); SIGTERM/SIGINT stop it after running actions finish.

    \b
    Example:
      nmc serve node --config /etc/nmc/server.cfg
    """
    path = server_config_path(config_path)
    try:
        config = load_config(path, kind="server")
        fmt = log_format or os.environ.get("NMC_LOG_FORMAT") or ("console" if click.get_text_stream("stderr").isatty() else "json")
        logfile = config.get_path("logfile")
        stream = open(logfile, "a", buffering=1, encoding="utf-8") if logfile else None  # noqa: SIM115 - lives as long as the daemon
        configure_logging(json=fmt == "json", level=config.get("loglevel") or "info", stream=stream)
    except (ConfigError, SettingsError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    asyncio.run(_serve(config))


async def _serve(config: Config) -> None:
    # One event loop for collecting facts (facter runs as a subprocess of it) and for serving.
    try:
        node = await build_node(config)
    except (ConfigError, SettingsError, FactError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    await run_nodes([(node, config)])
