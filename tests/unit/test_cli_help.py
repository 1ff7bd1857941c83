"""Every `nmc ... --help` shows an example of that very command, and every group lists its subcommands.

The tree is walked from nmc.cli.main's root group, so a command added later is
checked as soon as it is registered; hidden commands (internal workers such as
`ops simulate-worker`) are exempt.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from nmc.cli.main import cli


def _subcommands(group: click.Group) -> dict[str, click.Command]:
    """Every sub-command, lazily imported ones included (nmc.cli.lazy)."""
    ctx = click.Context(group)
    return {name: cmd for name in group.list_commands(ctx) if (cmd := group.get_command(ctx, name)) is not None}


def _walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(_subcommands(command).items()):
            if not sub.hidden:
                yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(cli))
GROUPS = [(path, cmd) for path, cmd in COMMANDS if isinstance(cmd, click.Group)]


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def _example_lines(text: str) -> list[str]:
    """The lines of the help's Example(s) blocks that start with `nmc ` (indented, as click prints them)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() in ("Example:", "Examples:")]
    examples = []
    for start in starts:
        for line in lines[start + 1:]:
            if not line.strip():
                break
            examples.append(line.strip())
    return [line for line in examples if line.startswith("nmc ") or line == "nmc"]


def test_the_tree_is_walked():
    # A guard for the walk itself: if it found nothing, the tests below would pass vacuously.
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"ping", "rpc", "ops ca issue", "policy lint", "audit tail"} <= names
    assert "ops simulate-worker" not in names


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=lambda p: " ".join(p) or "nmc")
def test_help_has_an_example_of_the_command(path: tuple[str, ...]):
    examples = _example_lines(_help(path))
    assert examples, f"`nmc {' '.join(path)} --help` has no Example block with an `nmc ...` line"
    prefix = " ".join(("nmc", *path))
    assert any(line == prefix or line.startswith(prefix + " ") for line in examples), (
        f"no example of `nmc {' '.join(path)}` starts with {prefix!r}: {examples}")


@pytest.mark.parametrize("path", [path for path, _ in GROUPS], ids=lambda p: " ".join(p) or "nmc")
def test_group_help_lists_its_subcommands(path: tuple[str, ...]):
    group = dict(COMMANDS)[path]
    assert isinstance(group, click.Group)
    text = _help(path)
    listed = text.split("Commands:", 1)[1].splitlines() if "Commands:" in text else []
    listed_names = {line.split()[0] for line in listed if line.startswith("  ") and line.strip()}
    visible = {name for name, sub in _subcommands(group).items() if not sub.hidden}
    assert visible and visible <= listed_names, f"`{' '.join(path)} --help` lists {listed_names}, not {visible}"
