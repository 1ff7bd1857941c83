"""Child processes for bench/peers_salt.py: started in their own process group, stopped exactly.

Every daemon the comparison starts (salt-master, salt-minions, nmc nodes and
services) is a `Child`. Each gets its own session, so Ctrl-C in the terminal
reaches only the bench, which then stops them itself; and stopping a group
also ends whatever the daemon forked (salt-minion keeps a second process and
forks one per job). Resident memory is read from /proc, so no extra package
is needed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["BenchError", "Child", "median_or_none", "rss_mib", "stop_all", "tree_pids", "wait_until"]


class BenchError(Exception):
    """A reason to stop the benchmark, printed as one line."""


class Child:
    """One daemon started in its own process group, its output appended to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, *,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        """Prepare (not start) `argv`; `name` is how errors mention it."""
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id (= process group id) while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the main process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start it in a new session, so a terminal's Ctrl-C does not reach it and stop() reaches all it forks."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=self.env, cwd=self.cwd, start_new_session=True)

    def check_alive(self) -> None:
        """BenchError naming the log if it died (a daemon that exits early is a broken setup, not a figure)."""
        if self._proc is not None and self._proc.poll() is not None:
            raise BenchError(f"{self.name} exited with code {self._proc.returncode}; see {self.log}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole group, SIGKILL what is left after `timeout` (salt-minion takes ~10 s to obey)."""
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Forked members may outlive the leader; the group id stays reserved while any member lives.
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pgid) or proc.poll() is None:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
        self._proc = None


def stop_all(children: Iterable[Child]) -> None:
    """Stop many at once: SIGTERM every group first, so slow ones (salt-minion: ~10 s) wait in parallel."""
    children = [c for c in children if c.running]
    for child in children:
        if child.pid is not None:
            _signal_group(child.pid, signal.SIGTERM)
    for child in children:
        child.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.5,
               alive: Iterable[Child] = ()) -> None:
    """Poll `check` until true; BenchError after `timeout` s or as soon as one of `alive` dies.

    Polling is fine here: this is readiness before measuring, never inside a measurement.
    """
    deadline = time.monotonic() + timeout
    while True:
        for child in alive:
            child.check_alive()
        if check():
            return
        if time.monotonic() >= deadline:
            raise BenchError(f"{what}: not ready after {timeout:g} s")
        time.sleep(interval)


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: parse after its last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_mib(pids: Iterable[int]) -> float:
    """Summed resident set size (VmRSS) of `pids` in MiB; processes that are gone count 0."""
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def median_or_none(values: Sequence[float]) -> float | None:
    """Median, or None for no values (a case that was not run)."""
    import statistics

    return statistics.median(values) if values else None
