"""The `nmc` command: click lives only under nmc/cli, one module per command group."""

from __future__ import annotations

import os
import sys

import click

from nmc import __version__
from nmc.cli.errors import show_click_error, show_unexpected, show_usage_error
from nmc.cli.lazy import LazyCommand, LazyGroup
from nmc.cli.terminal import choose_color

EXIT_USAGE = 4


# Every sub-command is imported when it runs, not before (nmc.cli.lazy): `nmc --version` and
# `nmc ping` do not pay for the CA code, the broker writer or the audit service.
_COMMANDS = {
    "audit": LazyCommand("nmc.cli.audit_cmd:audit",
                         "The audit trail: who ran what, where, when, allowed or not, and how it ended."),
    "completion": LazyCommand("nmc.cli.completion:completion",
                              "Print the shell completion script for SHELL (commands, options, agents,..."),
    "config": LazyCommand("nmc.cli.config_cmd:config",
                          "Inspect nmc's configuration (client.cfg, server.cfg, plugin.d, NMC_* variables)."),
    "dev": LazyCommand("nmc.cli.dev_cmd:dev", "A throwaway local fleet for trying nmc and for development."),
    "events": LazyCommand("nmc.cli.events_cmd:events",
                          "The fleet's lifecycle events: startups, shutdowns, alive, facts changed, and..."),
    "facts": LazyCommand("nmc.cli.report_cmds:facts",
                         "Show how many nodes have each value of FACT (dotted paths reach into..."),
    "find": LazyCommand("nmc.cli.fleet_cmds:find", "List the identities of the nodes that match the filter."),
    "inventory": LazyCommand("nmc.cli.report_cmds:inventory",
                             "Show everything NODE says about itself, or a scripted report over many nodes."),
    "jobs": LazyCommand("nmc.cli.jobs_cmd:jobs",
                        "Jobs: every rpc's request and the nodes' signed replies, kept in NMC_JOBS."),
    "ping": LazyCommand("nmc.cli.fleet_cmds:ping", "Ping matching nodes and show each one's round-trip time."),
    "plugin": LazyCommand("nmc.cli.plugin_cmd:plugin",
                          "Agent plugins: what this client knows and their DDLs (plugindir, entry..."),
    "policy": LazyCommand("nmc.cli.policy_cmd:policy", "Action policies: what they decide, and whether they parse."),
    "puppet": LazyCommand("nmc.cli.puppet_cmd:puppet",
                          "Run Puppet across the fleet, enable or disable it, and see its state."),
    "rpc": LazyCommand("nmc.cli.fleet_cmds:rpc",
                       "Run AGENT ACTION on every matching node and show each node's structured result."),
    "serve": LazyCommand("nmc.cli.serve_cmd:serve", "Run nmc daemons in the foreground (for systemd or a terminal)."),
}
_OPS_COMMANDS = {
    "broker": LazyCommand("nmc.cli.broker_cmd:broker",
                          "Run a NATS broker with JetStream for a dev or small fleet, in the foreground."),
    "ca": LazyCommand("nmc.cli.ca_cmd:ca", "Manage the fleet certificate authority and the certificates it issues."),
    "setup": LazyCommand("nmc.cli.setup_cmd:setup",
                         "Create or configure nmc's streams and the registry bucket: run once, before..."),
    "simulate": LazyCommand("nmc.cli.simulate_cmd:simulate",
                            "Run N real nodes (own connection, certificate, facts) in a few processes, for..."),
    "simulate-worker": LazyCommand("nmc.cli.simulate_cmd:simulate_worker", "(hidden)"),
    "systemd": LazyCommand("nmc.cli.systemd_cmd:systemd",
                           "Write systemd units for `nmc serve node|policy|audit|console`, and an example..."),
}


@click.group(cls=LazyGroup, lazy=_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


@cli.group(cls=LazyGroup, lazy=_OPS_COMMANDS)
def ops() -> None:
    """Operator tools: certificate authority, the embedded broker, JetStream setup, the fleet simulator, systemd units.

    \b
    Example:
      nmc ops ca init --dir ./nmc-ca
      nmc ops broker --tls --ca-dir ./nmc-ca
      nmc ops simulate --nodes 1000
    """



def main() -> None:
    """Console-script entry point: usage errors exit 4 (MCollective's rpc exit codes keep 1 and 2)."""
    # nats-py imports aiohttp, for websocket connections nmc never makes, whenever it is installed
    # (nats/aio/transport.py), and the console's dependency installs it: 12 MiB more in every node
    # daemon and ~0.1 s more start-up for every command. Marked absent here, so nats-py skips it;
    # `nmc serve console` lifts the mark before it imports aiohttp (nmc.ops.console.app).
    if "aiohttp" not in sys.modules:
        sys.modules["aiohttp"] = None  # type: ignore[assignment]
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
