"""How `nmc` reports a failure: one line on stderr, `Error: <what went wrong> (<hint>)`.

A user who mistyped a flag or pointed at the wrong file needs the one line
that says what to change, not click's three-line usage block or a Python
traceback. Every failure nmc foresaw is an `NmcError` (nmc.errors, import-light so
`nmc --version` stays fast) and is shown as its own one-line message; anything else is
named as unexpected. `--debug` (or NMC_DEBUG=1) brings the traceback back for the
failures that are not the user's: the exception is re-raised as it was.
"""

from __future__ import annotations

import click

from nmc.errors import NmcError, one_line

__all__ = ["show_click_error", "show_unexpected", "show_usage_error"]


def _echo_error(message: str) -> None:
    click.echo(f"Error: {one_line(message)}", err=True)


def show_usage_error(exc: click.UsageError) -> None:
    """`Error: <message> (see `nmc CMD --help`)` instead of click's usage block."""
    path = exc.ctx.command_path if exc.ctx is not None else "nmc"
    _echo_error(f"{exc.format_message()} (see `{path} --help`)")


def show_click_error(exc: click.ClickException) -> None:
    """A command's own one-line failure (it carries its hint already)."""
    _echo_error(exc.format_message())


def show_unexpected(exc: BaseException) -> None:
    """A failure no command turned into a message: say what it was and how to see more."""
    if isinstance(exc, NmcError):  # foreseen: its message says what to change (nmc.errors)
        _echo_error(str(exc))
        return
    detail = str(exc) or "(no message)"
    _echo_error(f"{type(exc).__name__}: {detail} (unexpected; run again with `nmc --debug ...` for the traceback)")
