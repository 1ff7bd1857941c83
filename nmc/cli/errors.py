"""How `nmc` reports a failure: one line on stderr, `Error: <what went wrong> (<hint>)`.

A user who mistyped a flag or pointed at the wrong file needs the one line
that says what to change, not click's three-line usage block or a Python
traceback. `--debug` (or NMC_DEBUG=1) brings the traceback back for the
failures that are not the user's: the exception is re-raised as it was.
"""

from __future__ import annotations

import click

__all__ = ["expected_errors", "one_line", "show_click_error", "show_unexpected", "show_usage_error"]


def expected_errors() -> tuple[type[Exception], ...]:
    """Failures of the user's set-up whose message already says what is wrong: shown as they are.

    Imported when a failure is shown, not at start-up: `nmc --version` must not load the ops code.
    """
    from nmc.ops.broker.server import BrokerError
    from nmc.ops.config.files import ConfigError
    from nmc.ops.pki import PKIError
    from nmc.ops.config.settings import SettingsError

    return (ConfigError, SettingsError, PKIError, BrokerError)


def one_line(text: str) -> str:
    """`text` with its lines joined: a message that wraps still ends up as one line of stderr."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


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
    if isinstance(exc, expected_errors()):
        _echo_error(str(exc))
        return
    detail = str(exc) or "(no message)"
    _echo_error(f"{type(exc).__name__}: {detail} (unexpected; run again with `nmc --debug ...` for the traceback)")
