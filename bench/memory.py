"""Benchmark: resident memory of one idle node daemon, and per simulated node.

1. One idle `nmc serve node`: a dev fleet of one node (the TLS broker, CA and server.cfg
   of `nmc dev up`), the real daemon as a subprocess; its VmRSS once it logged
   `node_started` and has settled (median of 5 samples, 0.5 s apart). Repeated --runs times.
2. Per simulated node: `nmc ops simulate --nodes N --processes P`, the summed VmRSS of its
   workers once ready, minus the same for a baseline simulation of one node per worker,
   divided by the N - P extra nodes. The broker's (nats-server) RSS is shown alongside.

Usage: python bench/memory.py [--nodes 1000] [--processes 2] [--runs 5] [--idle-only]

--idle-only measures part 1 alone (a few seconds per run instead of minutes): the figure
for the idle daemon is the same as in a full run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import NMC, ROOT, Simulation, env_for, machine, rss_kb

from nmc.ops.fleet.dev import DevFleet, DevLayout
from nmc.ops.broker.jetstream import setup_as
from nmc.transport.logs import configure_logging


def settled_rss(pids: list[int], samples: int = 5, every: float = 0.5) -> int:
    """Median over a few samples of the summed VmRSS of `pids` (KiB): start-up garbage has been collected."""
    values = []
    for _ in range(samples):
        time.sleep(every)  # sampling interval, not synchronisation: the processes are up already
        values.append(sum(rss_kb(p) for p in pids))
    return int(statistics.median(values))


def idle_daemon(tmp: Path, runs: int) -> list[int]:
    """VmRSS (KiB) of one idle `nmc serve node`, once per run."""
    fleet = DevFleet(DevLayout(tmp / "one"), nodes=1, port=0)
    broker, _ = fleet.prepare()
    asyncio.run(setup_as(fleet.operator_config()))  # as `nmc dev up`: the operator creates the streams
    cfg = fleet.layout.node_dir("node1.example.net") / "server.cfg"
    out = []
    try:
        for i in range(runs):
            proc = subprocess.Popen([*NMC, "serve", "node", "--config", str(cfg), "--log-format", "json"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env_for(),
                                    cwd=ROOT)
            try:
                assert proc.stderr is not None
                for line in proc.stderr:  # ends at exit: then the daemon failed
                    try:
                        if json.loads(line).get("event") == "node_started":
                            break
                    except ValueError:
                        continue
                else:
                    raise SystemExit(f"nmc serve node exited with {proc.wait()}")
                out.append(settled_rss([proc.pid]))
                print(f"run {i + 1}: idle node daemon {out[-1] / 1024:.1f} MiB", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        broker.stop()
    return out


def simulation_rss(tmp: Path, nodes: int, processes: int, tag: str) -> tuple[int, int, float]:
    """Summed worker VmRSS and broker VmRSS (KiB) of a simulation of `nodes`, and its start-up seconds."""
    with Simulation(tmp / f"{tag}{nodes}", nodes, processes) as sim:
        workers = sim.status["worker_pids"]
        return settled_rss(workers), settled_rss([sim.status["broker_pid"]], samples=1), sim.status["start_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle-only", action="store_true", help="measure the idle node daemon only (part 1)")
    args = ap.parse_args()
    configure_logging(json=False, level="error")
    with tempfile.TemporaryDirectory() as tmp:
        daemon = idle_daemon(Path(tmp), args.runs)
        if args.idle_only:
            print(f"\nmemory, median of {args.runs} runs, on {machine()}")
            print(f"command: python {' '.join(sys.argv)}")
            print(f"  one idle `nmc serve node` daemon     {statistics.median(daemon) / 1024:7.1f} MiB RSS")
            return
        per_node, brokers, starts = [], [], []
        for i in range(args.runs):
            base, _, _ = simulation_rss(Path(tmp), args.processes, args.processes, f"base{i}-")
            full, broker, start = simulation_rss(Path(tmp), args.nodes, args.processes, f"full{i}-")
            per_node.append((full - base) / (args.nodes - args.processes))
            brokers.append(broker)
            starts.append(start)
            print(f"run {i + 1}: workers {full / 1024:.0f} MiB for {args.nodes} nodes, baseline {base / 1024:.0f} MiB "
                  f"for {args.processes}; {per_node[-1]:.0f} KiB per node; broker {broker / 1024:.0f} MiB; "
                  f"start-up {start} s", flush=True)
    print(f"\nmemory, medians of {args.runs} runs, on {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"  one idle `nmc serve node` daemon     {statistics.median(daemon) / 1024:7.1f} MiB RSS")
    print(f"  per simulated node ({args.nodes} nodes, {args.processes} workers) {statistics.median(per_node):7.0f} KiB RSS")
    print(f"  nats-server with {args.nodes} TLS node connections  {statistics.median(brokers) / 1024:7.0f} MiB RSS "
          f"({statistics.median(brokers) / args.nodes:.0f} KiB per node)")
    print(f"  simulator start-up for {args.nodes} nodes  {statistics.median(starts):7.1f} s")


if __name__ == "__main__":
    main()
