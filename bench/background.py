"""Benchmark: how long `nmc rpc ... --background` takes to hand back a job id (issue 17: under 0.5 s).

Starts a dev fleet of 10 nodes (`nmc dev up`, its own nats-server, CA, policy and audit
services and NMC_JOBS), then runs the real command several times as a user's shell does
(`python -m nmc rpc rpcutil ping --background --json`, a child process, Python start-up
included) and prints per run and as medians: the wall time, the child's CPU time (user +
system, which a busy machine disturbs less than wall time), and the bare import of what the
command needs (nats-py, cryptography's x509, click, structlog; aiohttp marked absent as `nmc`
marks it) in alternating runs, so the
share that is Python start-up is visible. After the runs, every job is read back with
`nmc jobs wait` and must hold all 10 verified replies, so a fast exit that lost the job
would not count.

Usage: python bench/background.py [--nodes 10] [--runs 9]
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import NMC, ROOT, env_for, machine

# As `nmc` does (nmc.cli.main): nats-py would otherwise import aiohttp, which only the console uses.
BARE = "import sys; sys.modules['aiohttp'] = None; import nats, cryptography.x509, click, structlog"
BARE_SHOWN = "nats-py, cryptography.x509, click, structlog (aiohttp marked absent, as nmc does)"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of one child, and its standard output."""
    cpu, start = _children_cpu(), time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv[2:])} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return wall, _children_cpu() - cpu, out.stdout


def _wait_up(fleet: subprocess.Popen[str]) -> None:
    assert fleet.stdout is not None
    for line in fleet.stdout:
        if "Press Ctrl-C" in line:
            return
    raise SystemExit("nmc dev up ended before the fleet was up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    rows: list[tuple[float, float, float, float]] = []
    jobs: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = env_for({"NMC_CONFIG": f"{tmp}/dev/client.cfg", "HOME": tmp})
        fleet = subprocess.Popen([*NMC, "dev", "up", "--nodes", str(args.nodes), "--dir", f"{tmp}/dev", "--port", "0",
                                  "--no-console", "--no-metrics"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        try:
            _wait_up(fleet)
            command = [*NMC, "rpc", "rpcutil", "ping", "--background", "--json"]
            _timed(command, env), _timed([sys.executable, "-c", BARE], env)  # warm-up: page cache, bytecode
            for i in range(1, args.runs + 1):
                bare_wall, bare_cpu, _ = _timed([sys.executable, "-c", BARE], env)
                wall, cpu, out = _timed(command, env)
                jobs.append(json.loads(out)["job_id"])
                rows.append((wall, cpu, bare_wall, bare_cpu))
                print(f"run {i}: wall {wall * 1000:6.1f} ms  cpu {cpu * 1000:6.1f} ms   "
                      f"bare import wall {bare_wall * 1000:6.1f} ms  cpu {bare_cpu * 1000:6.1f} ms")
            for job in jobs:
                _, _, shown = _timed([*NMC, "jobs", "show", job, "--wait", "--json"], env)
                replies = json.loads(shown)["replies"]
                if len(replies) != args.nodes:
                    raise SystemExit(f"job {job}: {len(replies)} of {args.nodes} replies stored")
        finally:
            fleet.send_signal(signal.SIGINT)
            fleet.wait(timeout=60)

    def med(k: int) -> float:
        return statistics.median(r[k] for r in rows) * 1000

    print(f"\nnmc rpc rpcutil ping --background, {args.nodes} nodes, {args.runs} runs on {machine()}:")
    print(f"  median wall {med(0):6.1f} ms (min {min(r[0] for r in rows) * 1000:.1f}, "
          f"max {max(r[0] for r in rows) * 1000:.1f})   target < 500 ms: {'met' if med(0) < 500 else 'NOT met'}")
    print(f"  median cpu  {med(1):6.1f} ms")
    print(f"  bare import of {BARE_SHOWN}: median wall {med(2):6.1f} ms, cpu {med(3):6.1f} ms")
    print(f"  every job read back with all {args.nodes} verified replies ({len(jobs)} jobs)")


if __name__ == "__main__":
    main()
