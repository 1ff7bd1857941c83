"""Every `nmc ...` command shown in README.md and docs/*.md exists and parses, as the real CLI sees it.

Nothing runs: each command line is resolved through the click tree down to its leaf command,
whose `make_context` parses the arguments (options, choices, types, required arguments). A
command, subcommand or option that does not exist fails the test with the file and line.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from nmc.cli.main import cli
from tests.docs.doccommands import doc_commands, doc_files, parse_error, split_commands

ALL = [cmd for path in doc_files() for cmd in doc_commands(path)]


def _params(command: click.Command) -> Iterator[click.Parameter]:
    yield from command.params
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):  # lazily imported sub-commands too (nmc.cli.lazy)
            sub = command.get_command(ctx, name)
            if sub is not None:
                yield from _params(sub)


@pytest.fixture
def paths_need_not_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Docs name files of other machines (/etc/nmc/...): a path option only has to be a path here."""
    for param in _params(cli):
        if isinstance(param.type, click.Path) and param.type.exists:
            monkeypatch.setattr(param.type, "exists", False)


def test_the_docs_show_many_commands() -> None:
    """The extraction works: the quickstart tour, the operator guide and the README are all seen."""
    where = {cmd.path.name for cmd in ALL}
    assert {"README.md", "quickstart.md", "operator-guide.md", "coming-from-mcollective.md", "puppet.md"} <= where
    assert len(ALL) > 80


@pytest.mark.usefixtures("paths_need_not_exist")
def test_every_documented_command_parses() -> None:
    failures = [f"{cmd.where}: nmc {' '.join(cmd.args)}\n    {error}"
                for cmd in ALL if (error := parse_error(cmd.args)) is not None]
    assert not failures, "\n".join(["documented commands the CLI refuses:", *failures])


@pytest.mark.parametrize(("args", "message"), [
    (("pingg",), "No such command 'pingg'"),
    (("rpc", "rpcutil", "ping", "--no-such-flag"), "--no-such-flag"),
    (("puppet", "runall", "many"), "'many' is not a valid integer"),
    (("ops", "ca", "frobnicate"), "No such command 'frobnicate'"),
    (("rpc", "rpcutil", "ping", "--display", "some"), "'some' is not one of"),
])
def test_a_command_that_does_not_exist_is_reported(args: tuple[str, ...], message: str) -> None:
    error = parse_error(args)
    assert error is not None and message in error


def test_extraction_reads_sessions_pipes_continuations_and_comments(tmp_path) -> None:
    doc = tmp_path / "probe.md"
    lines = [
        "```console",
        "$ nmc ping -F role=web   # a comment",
        "nmc output line that is not a command",
        "$ nmc find --json | nmc rpc rpcutil ping --dm stdin > out.txt",
        "```",
        "",
        "   ```sh",
        "   NMC_CONFIG=x.cfg nmc config show \\",
        "       --json",
        "   echo nmc is not first here",
        "   nmc ops ca issue <name> --dir ./ca",
        "   ```",
        "```python",
        "nmc = 1",
        "```",
    ]
    doc.write_text("".join(f"{line}\n" for line in lines))
    found = [(c.line, c.args) for c in doc_commands(doc)]
    assert found == [
        (2, ("ping", "-F", "role=web")),
        (4, ("find", "--json")),
        (4, ("rpc", "rpcutil", "ping", "--dm", "stdin")),
        (8, ("config", "show", "--json")),
        (11, ("ops", "ca", "issue", "example", "--dir", "./ca")),
    ]
    assert split_commands("sudo nmc serve node && echo done") == [["nmc", "serve", "node"], ["echo", "done"]]
