"""A click group whose sub-commands are imported only when they run.

`nmc --version` used to import every command's module (the audit service, the
CA code, the broker configuration writer, nats-py, cryptography ...) before it
printed one line; `nmc ping` paid for `nmc ops ca` too. Each command is named here
by `module:attribute` with its one-line help, so `nmc --help` lists them without
importing any, and `nmc ping` imports the fleet commands alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import click

__all__ = ["LazyCommand", "LazyGroup"]


class LazyCommand(NamedTuple):
    """Where a sub-command lives (`nmc.cli.fleet_cmds:ping`) and its one-line help for listings."""

    target: str
    short_help: str

    def load(self) -> click.Command:
        """Import the module and return the command object."""
        module, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    """A group with eager commands (added as usual) and lazy ones (`lazy={name: LazyCommand}`)."""

    def __init__(self, *args: Any, lazy: Mapping[str, LazyCommand] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, LazyCommand] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, loaded or not, sorted."""
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, imported on first use."""
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy:
            command = self.lazy[cmd_name].load()
            self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of `--help` from the one-line helps: nothing is imported to show it."""
        rows: list[tuple[str, str]] = []
        limit = formatter.width - 6 - max((len(name) for name in self.list_commands(ctx)), default=0)
        for name in self.list_commands(ctx):
            loaded = self.commands.get(name)
            if loaded is not None:
                if loaded.hidden:
                    continue
                rows.append((name, loaded.get_short_help_str(limit)))
            elif not self.lazy[name].short_help.startswith("(hidden)"):
                rows.append((name, self.lazy[name].short_help))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def lazy_commands(module: str, names: Sequence[tuple[str, str]]) -> dict[str, LazyCommand]:
    """`{name: LazyCommand("module:name", help)}` for commands named like their attribute."""
    return {name: LazyCommand(f"{module}:{name.replace('-', '_')}", short_help) for name, short_help in names}
