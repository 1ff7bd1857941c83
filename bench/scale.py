"""Benchmark: ping, a fact-routed rpc and a broadcast rpc over 100, 1,000 and 5,000 simulated nodes.

For each size, starts `nmc ops simulate --nodes N` (real nodes spread over worker
processes, a TLS broker, the simulator's default authz/audit), then runs the real
CLI as a subprocess, a discarded warm-up and then --runs times each:
- ping:       `nmc ping` (the default `--dm auto`: the registry says whom to expect, one publish,
  ends on the last expected reply)
- ping-bcast: `nmc ping --dm broadcast` (ends when replies stall; the stall adapts to the fleet)
- routed:     `nmc rpc rpcutil ping -F role=web` (auto; published to the fact subject: 2 in 5 nodes)
- rpc:        `nmc rpc rpcutil ping` (auto: registry, then one publish on the broadcast subject)
- broadcast:  `nmc rpc rpcutil ping --dm broadcast` (every node; discovery by broadcast ping first)
- registry:   `nmc rpc rpcutil ping --dm registry` (every node; the node list from the JetStream
  registry, each node addressed on its own subject with its own signed copy)
and prints, per size and command, the medians of:
- wall: the whole command (Python start-up, discovery, the call, exit);
- last: when the last reply arrived, after the request was published (the command's own timing);
- tail: from the last reply to the end of gathering (broadcast ping: the stall timer; otherwise ends on the
  last expected reply, so this is ~0);
- replies/s: replies over the time to the last one.

Discovery (and the rpc's discovery) is given --discovery-timeout 60 so that a slow
simulation machine cuts nothing short; the reply counts are printed to show it.
Broadcast discovery ends at least 0.3 s (`discovery_stall`) after the latest reply, longer
when the fleet answers late or in bursts (the stall adapts: docs/discovery.md); `--stall S`
sets NMC_DISCOVERY_STALL for the commands (the counts column shows what was found).

Usage: python bench/scale.py [--sizes 100,1000,5000] [--runs 5] [--processes P] [-- simulate options]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import Simulation, Timing, machine, run_nmc_json, timing

from nmc.ops.fleet.dev import node_facts_for

COMMANDS = {
    "ping": ["ping"],
    "ping-bcast": ["ping", "--dm", "broadcast"],
    "routed": ["rpc", "rpcutil", "ping", "-F", "role=web"],
    "rpc": ["rpc", "rpcutil", "ping"],
    "broadcast": ["rpc", "rpcutil", "ping", "--dm", "broadcast"],
    "registry": ["rpc", "rpcutil", "ping", "--dm", "registry"],
}


def expected(command: str, nodes: int) -> int:
    """How many replies a command should get from `nodes` simulated nodes."""
    if command == "routed":
        return sum(1 for i in range(1, nodes + 1) if node_facts_for(i)[1]["role"] == "web")
    return nodes


def bench_size(tmp: Path, nodes: int, runs: int, processes: int, extra: list[str],
               dt: float, stall: float | None) -> tuple[dict, dict[str, list[Timing]]]:
    results: dict[str, list[Timing]] = {name: [] for name in COMMANDS}
    with Simulation(tmp / f"sim{nodes}", nodes, processes, *extra) as sim:
        env = sim.env | ({"NMC_DISCOVERY_STALL": str(stall)} if stall is not None else {})
        status = sim.status
        print(f"{nodes} nodes up in {status['start_seconds']} s "
              f"(certificates and configs {status['write_seconds']} s), {status['processes']} workers, "
              f"authz {status['authz']}, audit {status['audit']}", flush=True)
        for i in range(runs + 1):
            for name, args in COMMANDS.items():
                wall, data = run_nmc_json([*args, "--discovery-timeout", str(dt), "--timeout", str(dt)], env)
                t = timing(wall, data)
                if i == 0:
                    continue  # warm-up: TLS session, page cache, first audit stream writes
                results[name].append(t)
                want = expected(name, nodes)
                print(f"  run {i} {name:10}: wall {t.wall_ms:8.1f} ms  last {t.last_ms:8.1f} ms  "
                      f"tail {t.tail_ms:7.1f} ms  {t.replies}/{want} replies  {t.replies_per_s:7.0f}/s", flush=True)
    return status, results


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,5000", help="comma-separated node counts")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--discovery-timeout", type=float, default=60.0)
    ap.add_argument("--stall", type=float, default=None,
                    help="discovery_stall for the commands (default: the client's 0.3 s)")
    ap.add_argument("simulate", nargs="*", help="extra `nmc ops simulate` options, after --")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for nodes in sizes:
            status, results = bench_size(Path(tmp), nodes, args.runs, args.processes, args.simulate,
                                         args.discovery_timeout, args.stall)
            for name, rows in results.items():
                table.append((nodes, name, status, rows))
    print(f"\nscale, medians of {args.runs} runs after a warm-up, on {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"{'nodes':>6} {'command':10} {'start s':>8} {'wall ms':>9} {'last ms':>9} {'tail ms':>8} "
          f"{'replies/s':>10} {'replies':>12}")
    for nodes, name, status, rows in table:
        counts = sorted({r.replies for r in rows})
        print(f"{nodes:>6} {name:10} {status['start_seconds']:>8} "
              f"{statistics.median(r.wall_ms for r in rows):>9.1f} {statistics.median(r.last_ms for r in rows):>9.1f} "
              f"{statistics.median(r.tail_ms for r in rows):>8.1f} "
              f"{statistics.median(r.replies_per_s for r in rows):>10.0f} "
              f"{'-'.join(map(str, (counts[0], counts[-1]))) if len(counts) > 1 else counts[0]:>7}/{expected(name, nodes)}")


if __name__ == "__main__":
    main()
