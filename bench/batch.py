"""Benchmark: `nmc rpc shell run command="sleep 1" --batch 3` over 20 local nodes vs the ideal 7 s.

20 nodes with 3 at a time is ceil(20/3) = 7 batches of a 1-second action, so
7 s is the floor. The figure that matters is the overhead per batch:
discovery, signing, direct addressing, gathering, the whole CLI start-up.

Starts a nats-server, a throwaway CA and 20 nodes (the shell agent enabled)
in this process, then runs the real `nmc` CLI as a subprocess several times.
Usage: python bench/batch.py [--runs 5] [--nodes 20] [--batch 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout

from nmc.ops import pki  # noqa: E402
from nmc.ops.broker.server import Broker, BrokerSettings  # noqa: E402
from nmc.ops.config.files import load_config  # noqa: E402
from nmc.transport.logs import configure_logging  # noqa: E402
from nmc.ops.daemon.serve import build_node  # noqa: E402


def _cfg(path: Path, values: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    return path


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--batch", type=int, default=3)
    args = ap.parse_args()
    configure_logging(json=False, level="warning")
    tmp = Path(tempfile.mkdtemp(prefix="nmc-bench-batch-"))
    broker = Broker(BrokerSettings(port=0, store_dir=tmp / "js"), tmp / "broker")
    broker.start()
    ca = tmp / "ca"
    pki.init_ca(ca)
    user = pki.issue(ca, "bench", roles=("user",))
    security = {"plugin.security.ca_file": str(ca / "ca.pem")}
    client_cfg = _cfg(tmp / "client.cfg", {"plugin.nats.servers": broker.url, **security,
                                          "plugin.security.cert_file": str(user.certificate),
                                          "plugin.security.key_file": str(user.key)})
    nodes = []
    for i in range(1, args.nodes + 1):
        name = f"bench{i}.example.net"
        issued = pki.issue(ca, name, roles=("node",))
        cfg = _cfg(tmp / name / "server.cfg", {
            "identity": name, "plugin.nats.servers": broker.url, **security,
            "plugin.security.cert_file": str(issued.certificate), "plugin.security.key_file": str(issued.key),
            "plugin.shell.enabled": "true", "registerinterval": "0", "fact_refresh_interval": "0",
            "audit.enabled": "false"})
        node = await build_node(load_config(cfg, kind="server", env={}))
        await node.start()
        nodes.append(node)
    ideal = math.ceil(args.nodes / args.batch) * 1.0
    env = {**os.environ, "NMC_CONFIG": str(client_cfg)}
    walls = []
    try:
        for run in range(args.runs + 1):
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nmc", "rpc", "shell", "run", "command=sleep 1", "--batch", str(args.batch),
                "--json", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            wall = time.perf_counter() - started
            data = json.loads(out)
            ok = sum(1 for r in data["replies"] if r["statuscode"] == 0)
            if ok != args.nodes:
                raise SystemExit(f"expected {args.nodes} ok replies, got {ok}: {err.decode()[-500:]}")
            if run == 0:
                continue  # warm-up
            walls.append(wall)
            print(f"run {run}: {wall:6.2f} s  (ideal {ideal:.0f} s, overhead {wall - ideal:5.2f} s)")
    finally:
        for node in nodes:
            await node.stop()
        broker.stop()
    med = statistics.median(walls)
    print(f"\n{args.nodes} nodes, --batch {args.batch}, `sleep 1`, {args.runs} runs on {platform.node()} "
          f"({os.cpu_count()} cpus, Python {platform.python_version()}):")
    print(f"  median wall time {med:.2f} s vs ideal {ideal:.0f} s: overhead {med - ideal:.2f} s "
          f"({(med - ideal) / math.ceil(args.nodes / args.batch) * 1000:.0f} ms per batch, CLI start-up included)")


if __name__ == "__main__":
    asyncio.run(main())
