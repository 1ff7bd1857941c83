"""`nmc config`: show the effective configuration and the settings nmc knows."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import click

from nmc.ops.config.files import KNOWN_KEYS, Config, ConfigError, find_client_config, find_server_config, load_config

__all__ = ["config"]


def _printable(value: str) -> str:
    """``value`` for a table cell: empty shown as "", control characters escaped."""
    if value == "":
        return '""'
    if not value.isprintable():
        return repr(value)
    return value


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _root_config_path(ctx: click.Context) -> str | None:
    """The root group's ``--config`` value, if the root stores one in ``ctx.obj``."""
    obj = ctx.find_root().obj
    if isinstance(obj, dict):
        value = obj.get("config_path")
        return str(value) if value else None
    return None


def _choose_file(ctx: click.Context, server: bool, file: str | None) -> Path | None:
    """Which file to read: --file, else the root's --config (client), else the search."""
    if file:
        return Path(file)
    if server:
        return find_server_config(os.environ, Path.home())
    root = _root_config_path(ctx)
    if root:
        return Path(root)
    return find_client_config(os.environ, Path.home())


def _visible_keys(cfg: Config) -> list[str]:
    """Every key the kind knows plus every key something set, sorted."""
    return sorted(cfg.settings)


@click.group(name="config")
def config() -> None:
    """Inspect nmc's configuration (client.cfg, server.cfg, plugin.d, NMC_* variables).

    \b
    Example:
      nmc config show
      nmc config show --server plugin.nats.servers
      nmc config keys
    """


@config.command(name="show")
@click.option("--server", is_flag=True, help="Show a node's server.cfg instead of the client's.")
@click.option("--file", "file", metavar="PATH", help="Read this file instead of searching for one.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {key, value, origin}.")
@click.argument("keys", nargs=-1, metavar="[KEY]...")
@click.pass_context
def show(ctx: click.Context, server: bool, file: str | None, as_json: bool, keys: tuple[str, ...]) -> None:
    """Print the effective configuration: each key, its value and where it came from.

    Precedence, lowest first: built-in defaults, the main file, plugin.d/*.cfg
    next to it, NMC_<KEY> environment variables ('.' written '__').

    \b
    Example:
      nmc config show
      nmc config show --server --file /etc/nmc/server.cfg main_collective identity
      NMC_MAIN_COLLECTIVE=prod nmc config show --json main_collective
    """
    kind = "server" if server else "client"
    path = _choose_file(ctx, server, file)
    try:
        cfg = load_config(path, kind=kind, env=os.environ)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    wanted = [k.lower() for k in keys] or _visible_keys(cfg)
    missing = [k for k in wanted if k not in cfg.settings]
    if missing:
        raise click.ClickException(f"not set and not a known {kind} key: {', '.join(missing)} "
                                   "(see `nmc config keys` for the keys nmc knows)")
    settings = [cfg.settings[k] for k in wanted]
    if as_json:
        click.echo(json.dumps([{"key": s.key, "value": s.value, "origin": s.origin} for s in settings], indent=2))
        return
    if cfg.source is None:
        click.echo("no config file found; defaults and environment only")
    else:
        click.echo(f"config file: {cfg.source}")
    rows = [("KEY", "VALUE", "ORIGIN"), *((s.key, _printable(s.value), s.origin) for s in settings)]
    click.echo(_table(rows))


@config.command(name="keys")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def keys(as_json: bool) -> None:
    """List the settings nmc knows, with default, kinds and description.

    \b
    Example:
      nmc config keys
      nmc config keys --json
    """
    items = sorted(KNOWN_KEYS.items())
    if as_json:
        click.echo(json.dumps(
            [
                {"key": key, "default": spec.default, "kinds": list(spec.kinds), "is_path": spec.is_path,
                 "description": spec.description}
                for key, spec in items
            ],
            indent=2,
        ))
        return
    rows = [("KEY", "DEFAULT", "KINDS", "DESCRIPTION")]
    for key, spec in items:
        description = f"{spec.description} (path)" if spec.is_path else spec.description
        rows.append((key, _printable(spec.default), ",".join(spec.kinds), description))
    click.echo(_table(rows))
