"""The `nmc` command: click lives only under nmc/cli, one module per command group."""

from __future__ import annotations

import os
import sys

import click

from nmc import __version__
from nmc.cli.audit_cmd import audit
from nmc.cli.broker_cmd import broker
from nmc.cli.common import quiet_tls_eof_warning
from nmc.cli.completion import completion
from nmc.cli.ca_cmd import ca
from nmc.cli.config_cmd import config
from nmc.cli.dev_cmd import dev
from nmc.cli.errors import show_click_error, show_unexpected, show_usage_error
from nmc.cli.fleet_cmds import find, ping, rpc
from nmc.cli.plugin_cmd import plugin
from nmc.cli.policy_cmd import policy
from nmc.cli.puppet_cmd import puppet
from nmc.cli.render import choose_color
from nmc.cli.report_cmds import facts, inventory
from nmc.cli.serve_cmd import serve
from nmc.cli.setup_cmd import setup
from nmc.cli.simulate_cmd import simulate, simulate_worker
from nmc.cli.systemd_cmd import systemd

EXIT_USAGE = 4


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="nmc")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), envvar="NMC_CONFIG",
              help="Client configuration file (default: ~/.nmc/client.cfg, /etc/nmc/client.cfg, "
                   "then the running dev fleet's).")
@click.option("--debug", is_flag=True, envvar="NMC_DEBUG", help="Show tracebacks and debug logs.")
@click.option("--color/--no-color", "color", default=None,
              help="Colour the output or not [default: only on a terminal, never when NO_COLOR is set].")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool, color: bool | None) -> None:
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
    ctx.color = choose_color(color, os.environ)  # inherited by every subcommand's context


@cli.group()
def ops() -> None:
    """Operator tools: certificate authority, the embedded broker, JetStream setup, the fleet simulator, systemd units.

    \b
    Example:
      nmc ops ca init --dir ./nmc-ca
      nmc ops broker --tls --ca-dir ./nmc-ca
      nmc ops simulate --nodes 1000
    """


ops.add_command(ca)
ops.add_command(broker)
ops.add_command(setup)
ops.add_command(simulate)
ops.add_command(simulate_worker)
ops.add_command(systemd)
for command in (ping, find, rpc, facts, inventory, config, serve, dev):
    cli.add_command(command)
cli.add_command(audit)
cli.add_command(plugin)
cli.add_command(puppet)
cli.add_command(policy)
cli.add_command(completion)


def main() -> None:
    """Console-script entry point: usage errors exit 4 (MCollective's rpc exit codes keep 1 and 2)."""
    quiet_tls_eof_warning()  # daemons and dev up close TLS connections too
    state: dict[str, object] = {}  # becomes the root context's obj: --debug is readable after a failure
    try:
        rv = cli.main(prog_name="nmc", standalone_mode=False, obj=state)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # a group without a subcommand: its help, which lists the subcommands
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        show_usage_error(exc)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        show_click_error(exc)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if state.get("debug"):
            raise
        show_unexpected(exc)  # one line; `nmc --debug` shows the traceback
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
