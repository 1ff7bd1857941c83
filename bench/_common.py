"""Helpers the benchmarks share: run the real `nmc` CLI, read its own timings, start a simulation, read RSS.

The benchmarks time real commands as a user runs them (`python -m nmc ...` subprocesses)
and take "when did the last reply arrive" from the command's own `--json` output
(`elapsed_ms` per reply, measured from the request's publish), so the figures do not
depend on guessing where inside the process the request went out.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NMC = [sys.executable, "-m", "nmc"]


def env_for(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes: this checkout of nmc first on the path."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}", **(extra or {})}


@dataclass(frozen=True)
class Timing:
    """One command run: whole wall time, last reply after publish, gathering's end after it, reply count."""

    wall_ms: float
    last_ms: float
    tail_ms: float
    replies: int

    @property
    def replies_per_s(self) -> float:
        """Replies over the time to the last one."""
        return self.replies / (self.last_ms / 1000) if self.last_ms > 0 else 0.0


def run_nmc_json(args: list[str], env: dict[str, str], timeout: float = 600) -> tuple[float, dict[str, Any]]:
    """Run `nmc ARGS --json`; its wall time in ms and its parsed output (exit 1/2 allowed: failed/silent nodes)."""
    start = time.perf_counter()
    out = subprocess.run([*NMC, *args, "--json"], capture_output=True, text=True, env=env, timeout=timeout, check=False,
                         cwd=ROOT)
    wall = (time.perf_counter() - start) * 1000
    if out.returncode not in (0, 1, 2) or not out.stdout.strip():
        raise SystemExit(f"nmc {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return wall, json.loads(out.stdout)


def timing(wall_ms: float, data: dict[str, Any]) -> Timing:
    """Timing of a `ping --json` / `rpc --json` result from its replies' elapsed_ms and its summary."""
    replies = data.get("replies") or []
    last = max((r["elapsed_ms"] for r in replies), default=0.0)
    elapsed = (data.get("summary") or {}).get("elapsed_ms") or 0.0
    return Timing(wall_ms=wall_ms, last_ms=last, tail_ms=elapsed - last, replies=len(replies))


def rss_kb(pid: int) -> int:
    """Resident memory of a process (VmRSS from /proc), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def machine() -> str:
    """The machine line every benchmark prints with its figures."""
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / (1 << 20):.0f} GiB"
    except OSError:
        pass
    return (f"{platform.node()}: {os.cpu_count()} cpus, {mem} RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")


class Simulation:
    """`nmc ops simulate` as a child process: started, waited on through its --json ready line, stopped."""

    def __init__(self, directory: Path, nodes: int, processes: int, *extra: str) -> None:
        self.directory = directory
        self.args = ["ops", "simulate", "--nodes", str(nodes), "--processes", str(processes),
                     "--dir", str(directory), "--json", *extra]
        self.proc: subprocess.Popen[str] | None = None
        self.status: dict[str, Any] = {}

    def __enter__(self) -> Simulation:
        self.directory.mkdir(parents=True, exist_ok=True)
        err = (self.directory.parent / f"{self.directory.name}.err").open("w")
        self.proc = subprocess.Popen([*NMC, *self.args], stdout=subprocess.PIPE, stderr=err, text=True,
                                     env=env_for(), cwd=ROOT, start_new_session=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # ends when the simulator exits: then it failed
            if line.startswith("{"):
                self.status = json.loads(line)
                return self
        self.proc.wait()
        raise SystemExit(f"nmc ops simulate failed: {err.name}")

    @property
    def env(self) -> dict[str, str]:
        """The environment of a shell that talks to this simulation."""
        return env_for({"NMC_CONFIG": self.status["client_cfg"], "HOME": str(self.directory)})

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
