"""The agents' subprocess helper with real processes: time limit, output caps, group kill, argv templates."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from nmc.services.agents._proc import (
    CommandError,
    build_argv,
    program_missing,
    run_command,
    uses_placeholder,
)
from tests.proctools import gone



def pids(text: str) -> list[int]:
    return [int(word) for word in text.split()]


async def test_output_exit_code_and_duration():
    done = await run_command(["/bin/sh", "-c", "echo out; echo err >&2; exit 7"], timeout=10)
    assert (done.stdout, done.stderr, done.exitcode, done.timed_out) == ("out\n", "err\n", 7, False)
    assert not done.stdout_truncated and not done.stderr_truncated
    assert 0 <= done.duration < 10


async def test_merged_stderr_keeps_order():
    done = await run_command(["/bin/sh", "-c", "echo one; echo two >&2; echo three"], timeout=10,
                             merge_stderr=True)
    assert (done.stdout, done.stderr) == ("one\ntwo\nthree\n", "")
    assert done.tail(2) == "two\nthree"


async def test_head_and_tail_caps():
    script = "i=0; while [ $i -lt 300 ]; do echo line$i; i=$((i+1)); done"
    head = await run_command(["/bin/sh", "-c", script], timeout=10, max_output=20, keep="head")
    tail = await run_command(["/bin/sh", "-c", script], timeout=10, max_output=20, keep="tail")
    assert head.stdout == "line0\nline1\nline2\nli" and head.stdout_truncated
    assert tail.stdout.endswith("line298\nline299\n") and len(tail.stdout) == 20 and tail.stdout_truncated
    assert head.exitcode == tail.exitcode == 0


async def test_timeout_kills_the_whole_process_group():
    # sh and its background sleep share the group; both must die, and nothing waits for sleep's 30 s.
    done = await run_command(["/bin/sh", "-c", "sleep 30 & echo $$ $!; wait"], timeout=0.5)
    assert done.timed_out and done.exitcode == -signal.SIGTERM
    shell_pid, sleep_pid = pids(done.stdout)
    assert shell_pid == done.pid
    assert done.duration < 5
    assert await gone(sleep_pid)


async def test_sigterm_ignored_then_sigkill():
    done = await run_command(["/bin/sh", "-c", "trap '' TERM; echo $$; while :; do :; done"], timeout=0.3,
                             kill_grace=0.3)
    assert done.timed_out and done.exitcode == -signal.SIGKILL
    assert await gone(pids(done.stdout)[0])


async def test_cancelling_the_caller_kills_the_group(tmp_path: Path):
    fifo = tmp_path / "pid.fifo"
    os.mkfifo(fifo)
    task = asyncio.create_task(run_command(["/bin/sh", "-c", f"sleep 30 & echo $! > {fifo}; wait"], timeout=60))
    # The node cancels an action at its time limit; here the test does, once sleep surely runs.
    loop = asyncio.get_running_loop()
    sleep_pid = int(await asyncio.wait_for(loop.run_in_executor(None, fifo.read_text), 10))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(sleep_pid)


async def test_cancelling_while_the_command_starts_kills_the_group():
    marker = f"30.{os.getpid()}{id(object())}"  # a sleep argument no other process has
    task = asyncio.create_task(run_command(["/bin/sh", "-c", f"sleep {marker} & sleep {marker}; wait"],
                                           timeout=60))
    await asyncio.sleep(0)  # one loop turn: the process exists, its pipes are being connected
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 5, "cancelling must not wait for the children's pipes"
    left = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and marker in _cmdline(p)]
    assert all([await gone(pid) for pid in left])


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


async def test_a_daemon_holding_the_pipes_does_not_hold_the_command():
    # What a careless init script does: start something in the background that inherits stdout.
    done = await run_command(["/bin/sh", "-c", "sleep 30 & echo $!"], timeout=10, linger=0.2)
    try:
        assert done.exitcode == 0 and not done.timed_out
        assert done.duration < 5
    finally:
        os.kill(pids(done.stdout)[0], signal.SIGKILL)


async def test_environment_and_cwd(tmp_path: Path):
    done = await run_command(["/bin/sh", "-c", "echo $NMC_X; pwd"], timeout=10, env={"NMC_X": "yes", "PATH": "/bin"},
                             cwd=str(tmp_path))
    assert done.stdout == f"yes\n{tmp_path}\n"


async def test_cannot_start():
    with pytest.raises(CommandError) as missing:
        await run_command(["/nonexistent/nmc-command"], timeout=5)
    with pytest.raises(CommandError) as bad_cwd:
        await run_command(["/bin/true"], timeout=5, cwd="/nonexistent/dir")
    assert "No such file or directory" in missing.value.reason
    assert "/nonexistent/dir" in bad_cwd.value.reason


async def test_program_missing_tells_a_missing_program_from_other_failures(tmp_path: Path):
    async def start_error(argv: list[str], **kw) -> OSError:
        with pytest.raises(OSError) as raised:
            await asyncio.create_subprocess_exec(*argv, **kw)
        return raised.value

    missing = ["nmc-test-no-such-program", "apply", str(tmp_path / "site.pp")]
    assert program_missing(missing, await start_error(missing))
    assert program_missing(["/nonexistent/puppet"], await start_error(["/nonexistent/puppet"]))
    # The program is there; something else is missing (the working directory): not "not installed".
    assert not program_missing(["/bin/true"], await start_error(["/bin/true"], cwd="/nonexistent/dir"))
    script = tmp_path / "puppet"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    assert not program_missing([str(script)], await start_error([str(script)]))


def test_build_argv_keeps_each_value_one_argument():
    argv = build_argv("apt-get install -y {package}", {"package": "a b; rm -rf /"})
    assert argv == ["apt-get", "install", "-y", "a b; rm -rf /"]


def test_build_argv_placeholders_and_quoting():
    template = r"dpkg-query -W -f='${Status}\t${Version}\n' {package}"
    assert build_argv(template, {"package": "bash"}) == ["dpkg-query", "-W", r"-f=${Status}\t${Version}\n", "bash"]
    assert build_argv("dpkg -i '/tmp/my debs/{package}_{version}.deb'", {"package": "p", "version": "1.0"}) == [
        "dpkg", "-i", "/tmp/my debs/p_1.0.deb"]
    # A value is never searched again for placeholders.
    assert build_argv("x {package} {version}", {"package": "{version}", "version": "1"}) == ["x", "{version}", "1"]
    assert uses_placeholder("dpkg -i {package}_{version}.deb", "version")
    assert not uses_placeholder("apt-get install {package}", "version")


@pytest.mark.parametrize(("template", "values", "why"), [
    ("", {}, "empty"),
    ("apt-get 'unclosed", {}, "cannot split"),
    ("dpkg -i {package}_{version}.deb", {"package": "p", "version": None}, "no version was given"),
])
def test_build_argv_refuses(template, values, why):
    with pytest.raises(ValueError) as info:
        build_argv(template, values)
    assert why in str(info.value)
