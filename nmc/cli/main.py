"""The `nmc` command: click lives only under nmc/cli, one module per command group."""

from __future__ import annotations

import sys

import click

from nmc import __version__
from nmc.cli.audit_cmd import audit
from nmc.cli.broker_cmd import broker
from nmc.cli.common import quiet_tls_eof_warning
from nmc.cli.ca_cmd import ca
from nmc.cli.config_cmd import config
from nmc.cli.dev_cmd import dev
from nmc.cli.fleet_cmds import find, ping, rpc
from nmc.cli.plugin_cmd import plugin
from nmc.cli.policy_cmd import policy
from nmc.cli.puppet_cmd import puppet
from nmc.cli.report_cmds import facts, inventory
from nmc.cli.serve_cmd import serve
from nmc.cli.simulate_cmd import simulate, simulate_worker

EXIT_USAGE = 4


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="nmc")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), envvar="NMC_CONFIG",
              help="Client configuration file (default: ~/.nmc/client.cfg, /etc/nmc/client.cfg, "
                   "then the running dev fleet's).")
@click.option("--debug", is_flag=True, envvar="NMC_DEBUG", help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """Query and control many machines at once over NATS.

    \b
    Example:
      nmc dev up --nodes 5        # in one shell
      nmc ping                    # in another
      nmc rpc rpcutil get_fact fact=country -F role=web
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["debug"] = debug


@cli.group()
def ops() -> None:
    """Operator tools: certificate authority, the embedded broker and the fleet simulator."""


ops.add_command(ca)
ops.add_command(broker)
ops.add_command(simulate)
ops.add_command(simulate_worker)
for command in (ping, find, rpc, facts, inventory, config, serve, dev):
    cli.add_command(command)
cli.add_command(audit)
cli.add_command(plugin)
cli.add_command(puppet)
cli.add_command(policy)


def main() -> None:
    """Console-script entry point: usage errors exit 4 (MCollective's rpc exit codes keep 1 and 2)."""
    quiet_tls_eof_warning()  # daemons and dev up close TLS connections too
    try:
        rv = cli.main(prog_name="nmc", standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
