"""The `nmc` command: click lives only under nmc/cli, one module per command group."""

from __future__ import annotations

import click

from nmc import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="nmc")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), envvar="NMC_CONFIG",
              help="Client configuration file (default: search NMC_CONFIG, ~/.nmc/client.cfg, /etc/nmc/client.cfg, the running dev fleet).")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """Query and control many machines at once over NATS.

    \b
    Example:
      nmc ping
      nmc rpc rpcutil get_fact fact=country -F role=web
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["debug"] = debug


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="nmc")
