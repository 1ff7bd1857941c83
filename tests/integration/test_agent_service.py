"""The service agent end to end with the SysV `service` command and a real init script.

The dedicated service `nmc-test-svc` is an init script in /etc/init.d
written by the fixture: start-stop-daemon runs a python sleeper with a PID
file in tmp_path. The script and any daemon left running are removed at
teardown. (This host has no systemd; the systemctl backend is unit-tested.)
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nmc.protocol.ddl import summarize
from nmc.protocol.status import Status
from nmc.services.agents import Service

SVC = "nmc-test-svc"
SCRIPT = Path("/etc/init.d") / SVC
NODES = ("svc1.test", "svc2.test")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("service") is None or shutil.which("start-stop-daemon") is None
    or os.path.isdir("/run/systemd/system"),
    reason="needs root, the SysV service command and a host not run by systemd")

INIT_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          nmc-test-svc
# Required-Start:
# Required-Stop:
# Default-Start:
# Default-Stop:
# Short-Description: nmc service agent test daemon (tests only)
### END INIT INFO
PIDFILE={pidfile}
DAEMON={python}

do_start() {{
    start-stop-daemon --start --quiet --oknodo --background --make-pidfile --pidfile "$PIDFILE" \\
        --startas "$DAEMON" -- -c 'import time; time.sleep(3600)'
}}
do_stop() {{
    start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/5 --pidfile "$PIDFILE" --remove-pidfile
}}

case "$1" in
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop && do_start ;;
    status) start-stop-daemon --status --pidfile "$PIDFILE" ;;
    *) echo "Usage: $0 {{start|stop|restart|status}}" >&2; exit 3 ;;
esac
"""


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def daemon_pid(pidfile: Path) -> int | None:
    """The running daemon's pid according to its PID file and /proc, or None."""
    try:
        pid = int(pidfile.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    """Installs /etc/init.d/nmc-test-svc (PID file in tmp_path); removes it and its daemon at teardown."""
    pidfile = tmp_path / f"{SVC}.pid"
    python = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
    SCRIPT.write_text(INIT_SCRIPT.format(pidfile=shlex.quote(str(pidfile)), python=shlex.quote(python)))
    SCRIPT.chmod(0o755)
    try:
        yield pidfile
    finally:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, check=False)
        pid = daemon_pid(pidfile)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        SCRIPT.unlink(missing_ok=True)


async def start_nodes(fleet) -> None:
    for identity in NODES:
        await fleet.add(identity, {"role": "svc"}, agent_settings={"service": {"backend": "service"}})


async def on(fc, identity: str, action: str, service: str = SVC):
    result = await fc.call("service", action, {"service": service}, filter_expr=f"identity({identity})",
                           expect=[identity], timeout=60)
    assert [r.identity for r in result.results] == [identity]
    return result.results[0]


async def status_everywhere(fc) -> str:
    """The status both nodes report; they must agree, and the summary must count both."""
    result = await fc.call("service", "status", {"service": SVC}, expect=NODES, timeout=30)
    assert not result.no_response and all(r.ok for r in result.results), result.results
    states = {r.data["status"] for r in result.results}
    assert len(states) == 1, result.results
    summary = summarize(Service.spec().actions["status"], [r.data for r in result.results])
    assert [(s.output, s.value) for s in summary] == [("status", {next(iter(states)): 2})]
    return states.pop()


async def test_start_status_stop_restart_through_nodes(fleet, pidfile):
    await start_nodes(fleet)
    async with fleet.client() as fc:
        assert await status_everywhere(fc) == "stopped"

        started = await on(fc, "svc1.test", "start")
        assert started.status == Status.OK, started.message
        assert (started.data["service"], started.data["status"], started.data["exitcode"]) == (SVC, "running", 0)
        first = daemon_pid(pidfile)
        assert first is not None
        assert await status_everywhere(fc) == "running"

        restarted = await on(fc, "svc2.test", "restart")
        assert (restarted.status, restarted.data["status"]) == (Status.OK, "running")
        second = daemon_pid(pidfile)
        assert second is not None and second != first
        assert not alive(first)  # the stop half of restart waits until the old daemon is gone

        stopped = await on(fc, "svc1.test", "stop")
        assert (stopped.status, stopped.data["status"], stopped.data["exitcode"]) == (Status.OK, "stopped", 0)
        assert daemon_pid(pidfile) is None and not alive(second)
        assert await status_everywhere(fc) == "stopped"

        # restart of a stopped service starts it
        again = await on(fc, "svc2.test", "restart")
        assert (again.status, again.data["status"]) == (Status.OK, "running")
        assert daemon_pid(pidfile) not in (None, first, second)
        assert (await on(fc, "svc2.test", "stop")).data["status"] == "stopped"


async def test_unknown_and_invalid_services(fleet, pidfile):
    await start_nodes(fleet)
    async with fleet.client() as fc:
        unknown = await on(fc, "svc1.test", "status", "nmc-no-such-service")
        start_unknown = await on(fc, "svc1.test", "start", "nmc-no-such-service")
        invalid = await on(fc, "svc1.test", "start", "x;reboot")
        option = await on(fc, "svc1.test", "stop", "--all")
    assert (unknown.status, unknown.data["status"]) == (Status.ABORTED, "unknown")
    assert "unknown service" in unknown.message
    assert start_unknown.status == Status.ABORTED and "unrecognized service" in start_unknown.message
    assert start_unknown.data["status"] == "unknown"
    assert invalid.status == option.status == Status.INVALID_DATA
