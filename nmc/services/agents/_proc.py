"""Running a command for an agent: asyncio only, a time limit, capped output, the whole group killed.

Every command starts in its own session (so its own process group): on a
timeout, or when the action itself is cancelled, the group gets SIGTERM,
then SIGKILL, so nothing the command started is left running. Output is
collected through a subprocess protocol rather than stream readers because
`Process.wait()` also waits for the pipes to close, and a daemon started by
an init script may hold them open for hours: we stop at the command's own
exit (plus a short `linger` for the last bytes).
"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nmc.errors import NodeError
from nmc.services.procgroup import signal_group

__all__ = ["CommandError", "Completed", "build_argv", "program_missing", "run_command", "uses_placeholder"]

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class CommandError(NodeError):
    """The command could not be started at all (no such program, bad cwd, permissions)."""

    def __init__(self, argv: Sequence[str], reason: str) -> None:
        super().__init__(reason)
        self.argv = tuple(argv)


@dataclass(frozen=True)
class Completed:
    """What a finished (or killed) command left behind."""

    argv: tuple[str, ...]
    pid: int
    exitcode: int  # negative signal number when a signal ended it, as in subprocess
    stdout: str
    stderr: str  # empty when stderr was merged into stdout
    stdout_truncated: bool
    stderr_truncated: bool
    duration: float
    timed_out: bool

    def tail(self, lines: int = 20) -> str:
        """The last `lines` non-empty lines of stdout then stderr."""
        text = "\n".join(part for part in (self.stdout.rstrip("\n"), self.stderr.rstrip("\n")) if part)
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


class _Capture:
    """Keeps at most `limit` bytes of a stream: the first ones (head) or the last ones (tail)."""

    def __init__(self, limit: int, keep: str) -> None:
        self.limit = limit
        self.keep = keep
        self.buf = bytearray()
        self.truncated = False

    def feed(self, data: bytes) -> None:
        if self.keep == "head":
            room = self.limit - len(self.buf)
            if len(data) > room:
                self.truncated = True
            if room > 0:
                self.buf += data[:room]
            return
        self.buf += data
        if len(self.buf) > self.limit:
            self.truncated = True
            del self.buf[: len(self.buf) - self.limit]

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


class _Collector(asyncio.SubprocessProtocol):
    """Feeds pipe data into captures; resolves `exited` when the command ends, `closed` when the pipes do."""

    def __init__(self, loop: asyncio.AbstractEventLoop, out: _Capture, err: _Capture) -> None:
        self.out = out
        self.err = err
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        chunk = data.encode() if isinstance(data, str) else data
        (self.out if fd == 1 else self.err).feed(chunk)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _ended(fut: asyncio.Future[None], timeout: float | None) -> bool:
    """Wait for `fut` at most `timeout` seconds without cancelling it; True when it is done."""
    if not fut.done():
        await asyncio.wait({fut}, timeout=timeout)
    return fut.done()


async def _terminate(pgid: int, exited: asyncio.Future[None], grace: float) -> None:
    """SIGTERM the group, SIGKILL it after `grace` seconds, and SIGKILL what is left once the leader died."""
    signal_group(pgid, signal.SIGTERM)
    if not await _ended(exited, grace):
        signal_group(pgid, signal.SIGKILL)
        await _ended(exited, grace)
    signal_group(pgid, signal.SIGKILL)  # children that ignored SIGTERM must not outlive a timed-out command


async def run_command(argv: Sequence[str], *, timeout: float | None, max_output: int = 65536,
                      keep: str = "head", env: Mapping[str, str] | None = None, cwd: str | None = None,
                      merge_stderr: bool = False, linger: float = 1.0, kill_grace: float = 2.0) -> Completed:
    """Run `argv` (never through a shell), wait at most `timeout` seconds, keep `max_output` bytes per stream.

    `keep` is "head" (the first bytes, for command output people read) or
    "tail" (the last bytes, where package managers put their errors).
    Cancelling the caller kills the command's process group too.
    """
    if not argv:
        raise CommandError(argv, "empty command")
    if keep not in ("head", "tail"):
        raise ValueError(f"keep must be 'head' or 'tail', got {keep!r}")
    loop = asyncio.get_running_loop()
    out, err = _Capture(max_output, keep), _Capture(max_output, keep)
    started = time.monotonic()
    spawn = asyncio.ensure_future(loop.subprocess_exec(
        lambda: _Collector(loop, out, err), *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True))
    try:
        transport, proto = await asyncio.shield(spawn)
    except OSError as exc:
        raise CommandError(argv, f"cannot run {argv[0]}: {exc.strerror or exc}"
                                 + (f": {exc.filename}" if exc.filename else "")) from None
    except asyncio.CancelledError:
        # Cancelled while the command was starting. Unshielded, asyncio would kill only its
        # first process and then wait for the pipes that its children still hold: let it finish
        # starting (a moment), then kill the whole group.
        try:
            transport, _ = await spawn
        except OSError:
            raise asyncio.CancelledError from None
        signal_group(transport.get_pid(), signal.SIGKILL)
        transport.close()
        raise
    pid = transport.get_pid()
    timed_out = False
    try:
        if not await _ended(proto.exited, timeout):
            timed_out = True
            await _terminate(pid, proto.exited, kill_grace)
        # Normally the pipes close with the command; something it left running may keep them open.
        await _ended(proto.closed, linger)
    except BaseException:
        # Cancelled (the node's action time limit, or shutdown): the command must not outlive us.
        signal_group(pid, signal.SIGKILL)
        raise
    finally:
        transport.close()
    code = transport.get_returncode()
    return Completed(argv=tuple(argv), pid=pid, exitcode=code if code is not None else -signal.SIGKILL,
                     stdout=out.text(), stderr=err.text(), stdout_truncated=out.truncated,
                     stderr_truncated=err.truncated, duration=round(time.monotonic() - started, 3),
                     timed_out=timed_out)


def program_missing(argv: Sequence[str], exc: OSError) -> bool:
    """True when starting `argv` failed because its program is not installed (not on PATH, no such file).

    A FileNotFoundError alone does not say which file was missing (the program, or the
    interpreter of a script); the program is the one when it cannot be found either.
    """
    return isinstance(exc, FileNotFoundError) and bool(argv) and shutil.which(argv[0]) is None


def uses_placeholder(template: str, name: str) -> bool:
    """True when the command template mentions `{name}`."""
    return "{" + name + "}" in template


def build_argv(template: str, values: Mapping[str, str | None]) -> list[str]:
    """Split a command template like a shell would (no shell runs), then fill `{name}` placeholders.

    Splitting comes first, so a value always stays one argument whatever it
    contains. Raises ValueError for a template that does not split, is empty,
    or uses a placeholder whose value is None.
    """
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"cannot split {template!r}: {exc}") from None
    if not words:
        raise ValueError("the command is empty")

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)  # not ours: left as written (e.g. dpkg-query's ${Status})
        value = values[name]
        if value is None:
            raise ValueError(f"{template!r} uses {{{name}}} but no {name} was given")
        return value

    # One pass per word: a filled-in value is never searched for placeholders again.
    return [_PLACEHOLDER.sub(fill, word) for word in words]
