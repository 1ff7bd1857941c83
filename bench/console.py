"""Benchmark: the web console's pages over the 5,000-node simulator (issue 18: the Fleet page in under 1 s).

Starts `nmc ops simulate --nodes N` (a TLS broker, real nodes in worker processes) and
`nmc serve console --port 0` on the simulation's console certificate (role `console`) as
subprocesses, waits until the console's /api/fleet counts every node, then times, from this
process, the GET of each page to its full response body (a new HTTP connection each time, as
a browser's first load; a discarded warm-up, then --runs times):
- fleet:        `/` (the whole HTML page: counts of the columns, the first 200 nodes)
- filtered:     `/?filter=role=web` (2 in 5 simulated nodes)
- page 10:      `/?page=10`
- api fleet:    `/api/fleet` (the same data as JSON)
- node:         `/node/node1.example.net`
and prints the median, min and max of each, and whether the 1 s target is met (the Fleet
page's median and max). The console serves pages from its cached registry read
(nmc/ops/console/snapshot.py); /api/fleet says how long that read took (`read_seconds`: what a
page waits for when the console has no read younger than 30 s, e.g. after 10 idle minutes)
and how old it was (`read_age`): both are printed too.

Usage: PYTHONPATH=/work/main python bench/console.py [--nodes 5000] [--runs 7] [--processes P]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import NMC, ROOT, Simulation, machine

from nmc.ops.fleet.dev import DevLayout

TARGET_S = 1.0
PAGES = {
    "fleet": "/",
    "filtered": "/?filter=role%3Dweb",
    "page 10": "/?page=10",
    "api fleet": "/api/fleet",
    "node": "/node/node1.example.net",
}


class Console:
    """`nmc serve console --port 0` as a child process; its URL and token read from its first line."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.proc = subprocess.Popen([*NMC, "serve", "console", "--config", str(config), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env, cwd=ROOT,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("nmc console: open "):
                url = urllib.parse.urlsplit(line.split("open ", 1)[1].strip())
                self.host, self.port = url.hostname or "127.0.0.1", int(url.port or 80)
                self.token = urllib.parse.parse_qs(url.query)["token"][0]
                return
        raise SystemExit(f"nmc serve console failed: {log}")

    def get(self, path: str) -> tuple[float, int, bytes]:
        """GET `path` on a new connection: seconds to the whole body, status, body."""
        began = time.perf_counter()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        return time.perf_counter() - began, response.status, body

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def wait_for_fleet(console: Console, nodes: int, within: float) -> float:
    """Poll /api/fleet until it counts `nodes` nodes; seconds it took."""
    began = time.monotonic()
    seen = -1
    while time.monotonic() - began < within:
        _, status, body = console.get("/api/fleet")
        if status == 200:
            seen = json.loads(body)["total"]
            if seen >= nodes:
                return time.monotonic() - began
        time.sleep(0.5)
    raise SystemExit(f"the console counted {seen} of {nodes} nodes after {within:.0f} s")


def measure(console: Console, runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each page once as a warm-up, then `runs` rounds of every page; seconds per GET, and the reads' figures."""
    results: dict[str, list[float]] = {name: [] for name in PAGES}
    reads: dict[str, list[float]] = {"read_seconds": [], "read_age": []}
    for i in range(runs + 1):
        for name, path in PAGES.items():
            seconds, status, body = console.get(path)
            if status != 200:
                raise SystemExit(f"GET {path}: {status} {body[:300]!r}")
            if i == 0:
                continue
            results[name].append(seconds)
            if path.startswith("/api/fleet"):
                answer = json.loads(body)
                for key, values in reads.items():
                    values.append(float(answer[key]))
            print(f"  run {i} {name:10}: {seconds * 1000:8.1f} ms  {len(body):8d} bytes", flush=True)
    return results, reads


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--wait", type=float, default=300.0, help="seconds to wait for every node in the console")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Simulation(Path(tmp) / "sim", args.nodes, args.processes) as sim:
        status = sim.status
        print(f"{args.nodes} nodes up in {status['start_seconds']} s, {status['processes']} workers", flush=True)
        layout = DevLayout(Path(status["client_cfg"]).parent)
        console = Console(layout.console_cfg, sim.env, Path(tmp) / "console.err")
        try:
            waited = wait_for_fleet(console, args.nodes, args.wait)
            print(f"the console counts {args.nodes} nodes after {waited:.1f} s", flush=True)
            results, reads = measure(console, args.runs)
        finally:
            console.stop()
    print(f"\nconsole pages over {args.nodes} simulated nodes: seconds to the whole response body, "
          f"{args.runs} runs after a warm-up, on {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"{'page':10} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for name, rows in results.items():
        print(f"{name:10} {statistics.median(rows) * 1000:>10.1f} {min(rows) * 1000:>8.1f} {max(rows) * 1000:>8.1f}")
    print(f"registry read behind the pages: median {statistics.median(reads['read_seconds']):.2f} s "
          f"(max {max(reads['read_seconds']):.2f} s); age when served: median "
          f"{statistics.median(reads['read_age']):.1f} s, max {max(reads['read_age']):.1f} s")
    fleet = results["fleet"]
    met = statistics.median(fleet) < TARGET_S
    print(f"target: the Fleet page in under {TARGET_S:.0f} s: {'met' if met else 'NOT met'} "
          f"(median {statistics.median(fleet):.3f} s, max {max(fleet):.3f} s)")


if __name__ == "__main__":
    main()
