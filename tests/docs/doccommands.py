"""The `nmc` command lines of the documentation: found in fenced code blocks, checked against the click tree.

A code block whose lines start with `$ ` is a terminal session: only its `$ ` lines are
commands, the rest is output. In any other shell block (sh, console, untagged), every
line that starts with `nmc` (after `VAR=value` assignments or `sudo`) is a command, and
so is every `nmc` after a `|`, `&&`, `||` or `;` on it. Blocks in a data or programming
language (python, json, toml, ini, yaml) hold no commands.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from nmc.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
NOT_SHELL = {"python", "py", "json", "jsonc", "toml", "ini", "yaml", "yml", "cfg", "conf", "text"}
# `<placeholder>` words in commands and what a test puts in their place (anything else: "example").
PLACEHOLDERS = {"<id>": "NDTZ6G2LMX7PZB0FKKCWDO", "<old serial>": "3f2a", "<n>": "3"}
_PLACEHOLDER = re.compile(r"<[A-Za-z][A-Za-z0-9_. -]*>")
_SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")"}
_REDIRECTS = {">", ">>", "<", "2>", "2>&1", ">&"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class DocCommand:
    """One `nmc ...` command line of a document: where it is and its arguments after `nmc`."""

    path: Path
    line: int
    text: str
    args: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    """README.md and every docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_blocks(path: Path) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """(language, [(line number, text), ...]) of every fenced block; indented fences (in lists) too."""
    lang, body, fence = "", [], None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence, lang, body = raw[: raw.index("`")], stripped[3:].strip().lower(), []
            continue
        if stripped.startswith("```"):
            yield lang, body
            fence = None
            continue
        body.append((number, raw[len(fence):] if raw.startswith(fence) else raw.lstrip()))


def _logical_lines(lines: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Join `\\` continuations; the line number is that of the first physical line."""
    start, parts = 0, []
    for number, text in lines:
        if not parts:
            start = number
        if text.rstrip().endswith("\\"):
            parts.append(text.rstrip()[:-1])
            continue
        parts.append(text)
        yield start, " ".join(p.strip() for p in parts)
        parts = []
    if parts:
        yield start, " ".join(p.strip() for p in parts)


def _starts_with_nmc(line: str) -> bool:
    words = line.split()
    while words and (_ASSIGNMENT.match(words[0]) or words[0] == "sudo"):
        words = words[1:]
    return bool(words) and words[0] == "nmc"


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line (comments, redirections and assignments dropped)."""
    for placeholder in _PLACEHOLDER.findall(line):
        line = line.replace(placeholder, PLACEHOLDERS.get(placeholder, "example"))
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    tokens = list(lexer)
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if token in _SEPARATORS:
            commands.append([])
        elif token in _REDIRECTS or token.startswith((">", "<")):
            skip_next = token in _REDIRECTS
        elif token in ("...", "…"):
            continue
        else:
            commands[-1].append(token)
    out = []
    for words in commands:
        while words and (_ASSIGNMENT.match(words[0]) or words[0] == "sudo"):
            words = words[1:]
        if words:
            out.append(words)
    return out


def doc_commands(path: Path) -> list[DocCommand]:
    """Every `nmc` command line of one document, in order."""
    found = []
    for lang, body in code_blocks(path):
        if lang in NOT_SHELL:
            continue
        session = any(text.lstrip().startswith("$ ") for _, text in body)
        if session:
            lines = [(n, t.lstrip()[2:]) for n, t in body if t.lstrip().startswith("$ ")]
        else:
            lines = body
        for number, line in _logical_lines(lines):
            if not _starts_with_nmc(line.strip()):
                continue
            for words in split_commands(line):
                if words[0] == "nmc":
                    found.append(DocCommand(path, number, line.strip(), tuple(words[1:])))
    return found


def parse_error(args: tuple[str, ...]) -> str | None:
    """None when `nmc ARGS` parses against the real click tree (nothing runs), else click's message."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            ctx = cli.make_context("nmc", list(args))
            command: click.Command = cli
            while isinstance(command, click.Group):
                rest = [*ctx._protected_args, *ctx.args]
                if not rest:
                    return None  # a bare group: `nmc ops` prints its help
                name, sub, rest = command.resolve_command(ctx, rest)
                assert sub is not None and name is not None
                ctx = sub.make_context(name, rest, parent=ctx)
                command = sub
    except click.exceptions.NoArgsIsHelpError:
        return None
    except click.exceptions.Exit as exc:  # --help, --version
        return None if exc.exit_code == 0 else f"exit {exc.exit_code}"
    except click.ClickException as exc:
        return exc.format_message()
    return None
