"""Where a node's CPU goes per request: py-spy on `nmc serve node` while bench/throughput.py loads it.

Runs bench/throughput.py (same options) in a child process, finds the node daemon
it starts, and samples it with py-spy (`record --format raw --nonblocking`, only
samples where the node is on a CPU) through the measured runs. Each sample goes
to the first category below whose function is on its stack, so the table adds up
to 100%; the microseconds are those shares of the node's CPU per request, which
throughput.py itself measures (from /proc) over the same runs.

Needs py-spy (pip install py-spy) and Linux. The categories name nmc and nats-py
functions: a renamed function lands in "other", which then grows.

Usage: python bench/node_profile.py [--runs 2] [--duration 8] [--rate 200] [--raw FILE]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (category, markers): the first category with a marker in any frame of a sample takes the sample.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("Ed25519 verify of the request", ("verify_bytes (",)),
    ("Ed25519 signing: decision record, result record, reply", ("sign_bytes (",)),
    ("socket writes incl. TLS (nats-py flusher)", ("Client._flusher (",)),
    ("socket reads incl. TLS, NATS protocol parsing", ("Client._read_loop (", "_read_ready", "SSLProtocol.buffer_updated")),
    ("audit acknowledgements (before issue 16: JetStream publish awaiting each)",
     ("JetStreamAuditor._on_ack", "JetStreamAuditor._expire_loop", "_ack_error", "JetStreamContext.publish")),
    ("structlog (log calls filtered out by level)", ("structlog/",)),
    ("JSON encoding of records and reply (codec.dumps)", ("dumps (nmc/protocol/codec.py", "AuditRecord.to_bytes",
                                                         "Reply.to_bytes")),
    ("decode: subject, JSON, request fields", ("RequestPipeline._decode (",)),
    ("replay check, id kept in memory and appended to the replay file",
     ("RequestPipeline._remember (", "RequestPipeline._check_replay (")),
    ("filter", ("RequestPipeline._matches (",)),
    ("authorization (decision cache)", ("RequestPipeline._authorize (",)),
    ("audit record built (dataclass, nonce, redaction, time)", ("RequestPipeline._audit_record (",)),
    ("audit record published (subject, headers, nats-py PUB)", ("JetStreamAuditor.record (",)),
    ("reply built and published (nats-py PUB)", ("RequestPipeline._send_reply (", "RequestPipeline._reply (")),
    ("resolve, validate, run rpcutil.ping", ("RequestPipeline._resolve (", "RequestPipeline._execute (")),
    ("rest of the request path (handle, certificate checks, micro service)",
     ("RequestPipeline.handle (", "MicroService._run (", "Node._on_request", "_dispatch.<locals>")),
    ("nats-py delivery to subscriptions", ("Subscription._wait_for_msgs (",)),
    ("event loop (epoll, scheduling)", ("BaseEventLoop._run_once (", "EpollSelector.select")),
]


def categorize(raw: str) -> tuple[int, collections.Counter[str]]:
    """(samples, samples per category) of py-spy's raw output (`frame;frame;... count` lines)."""
    total, counts = 0, collections.Counter[str]()
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        n = int(number)
        total += n
        frames = stack.split(";")
        for name, markers in CATEGORIES:
            if any(marker in frame for frame in frames for marker in markers):
                counts[name] += n
                break
        else:
            counts["other"] += n
    return total, counts


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if re.search(rf"^PPid:\s+{pid}$", status, re.M):
                out.append(int(entry))
    return out


def _is_node(pid: int) -> bool:
    try:
        return b"serve\0node\0" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--raw", type=Path, help="also keep py-spy's raw samples in this file")
    args = ap.parse_args()
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        sys.exit("py-spy not found: pip install py-spy")
    bench = subprocess.Popen([sys.executable, str(HERE / "throughput.py"), "--runs", str(args.runs),
                              "--duration", str(args.duration), "--concurrency", str(args.concurrency)],
                             stdout=subprocess.PIPE, text=True)
    assert bench.stdout is not None
    lines: list[str] = []
    node = None
    # The warm-up run starts once the node answers: the header line says so.
    for line in bench.stdout:
        lines.append(line)
        print(line, end="", flush=True)
        if line.startswith("one node"):
            node = next((pid for pid in _children(bench.pid) if _is_node(pid)), None)
            break
    if node is None:
        bench.wait()
        sys.exit("bench/throughput.py did not start a node")
    time.sleep(min(args.duration, 2.0) + 0.5)  # past the warm-up run: sample the measured runs only
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "node.raw"
        spy = subprocess.Popen([pyspy, "record", "--pid", str(node), "--format", "raw", "--nonblocking",
                                "--rate", str(args.rate), "--duration", str(int(args.runs * args.duration - 1)),
                                "--output", str(raw_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for line in bench.stdout:
            lines.append(line)
            print(line, end="", flush=True)
        bench.wait()
        spy.wait()
        raw = raw_path.read_text() if raw_path.exists() else ""
    if args.raw:
        args.raw.write_text(raw)
    per_request = next((float(m.group(1)) for line in lines
                        if (m := re.match(r"\s+node\s+(\d+) us", line))), None)
    total, counts = categorize(raw)
    if not total:
        sys.exit("py-spy took no samples (is ptrace allowed?)")
    print(f"\nnode CPU per request by category ({total} samples; {per_request:.0f} us per request in all):"
          if per_request else f"\nnode CPU by category ({total} samples):")
    print("| where | share | per request |\n| --- | --- | --- |")
    for name in [name for name, _ in CATEGORIES] + ["other"]:
        share = counts[name] / total
        us = f"{share * per_request:.0f} us" if per_request else ""
        print(f"| {name} | {100 * share:.1f}% | {us} |")


if __name__ == "__main__":
    main()
