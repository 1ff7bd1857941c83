"""The policy service is SIGKILLed and restarted under load: nothing unapproved runs, the outage fails closed.

Two `nmc serve node` daemons in `authz.mode = service` run `shell.run` for
two callers at once: `admin` (allowed by the dev fleet's default.policy) and
`mallory` (no rule: denied). Every command that runs appends its caller's
name to a file: the node-side ground truth. Mid-load the `nmc serve policy`
process is SIGKILLed, requests keep coming, then a new one starts.

What the design promises (docs/authorization.md "The cache", docs/failures.md):
- no request of a denied caller ever runs, before, during or after the outage;
- a node without a cached decision (here node 1, `authz.cache_ttl = 0`) denies
  every request while no policy service answers, saying "policy service
  unreachable" (status Aborted, a reason, never a crash);
- a node with a cached decision (node 2, the default cache) keeps applying it
  for up to `authz.cache_ttl`: admin's cached allow keeps working, mallory's
  cached deny keeps denying;
- once a policy service is back, allowed requests run again everywhere.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from nmc.client.fleet import CallResult, ClientSettings, FleetClient
from nmc.ops.broker.server import Broker
from nmc.protocol.status import Status
from nmc.security.names import inbox_prefix
from tests.integration.daemonkit import DaemonFleet, until

WORKERS_PER_CALLER = 2
PER_PHASE = 12  # requests per caller that begin and end inside one phase


@dataclass(frozen=True)
class Outcome:
    """One request of the load: the phase it began and ended in, and what came back."""

    caller: str
    began: str
    ended: str
    result: CallResult


@pytest.mark.timeout(150)
async def test_policy_service_killed_and_restarted_under_load(nats_server: Broker, tmp_path: Path):
    daemons = DaemonFleet(tmp_path / "fleet", nats_server.url, 2, node_cfg={"plugin.shell.enabled": "true"})
    uncached, cached = daemons.identities
    daemons.add_keys(daemons.server_cfg(uncached), {"authz.cache_ttl": "0"})
    ran = tmp_path / "ran"
    phase = "up"
    outcomes: list[Outcome] = []
    stop = asyncio.Event()
    # One connection per caller: nodes answer only into the signer's own inbox.
    conns = {name: await nats.connect(nats_server.url, inbox_prefix=inbox_prefix(name)) for name in ("admin", "mallory")}
    try:
        policy = daemons.policy().start()
        await policy.wait_for("policy_service_started")
        nodes = await daemons.start_nodes()
        clients = {name: FleetClient(nc=conns[name], signer=daemons.signer(name), verifier=daemons.verifier(),
                                     settings=ClientSettings(collective="nmc", timeout=10))
                   for name in ("admin", "mallory")}

        async def worker(caller: str) -> None:
            while not stop.is_set():
                began = phase
                result = await clients[caller].call("shell", "run", {"command": f"echo {caller} >> {ran}"},
                                                     expect=daemons.identities, direct=True)
                outcomes.append(Outcome(caller, began, phase, result))

        def done_in(name: str) -> Counter[str]:
            return Counter(o.caller for o in outcomes if o.began == o.ended == name)

        async def enough(name: str) -> None:
            async def check() -> bool:
                return min(done_in(name)[c] for c in clients) >= PER_PHASE
            await until(check, 60, f"{PER_PHASE} requests per caller in phase {name!r}")

        load = [asyncio.create_task(worker(caller)) for caller in clients for _ in range(WORKERS_PER_CALLER)]
        await enough("up")
        phase = "killing"
        policy.kill()
        phase = "down"
        await enough("down")
        phase = "restarting"
        await daemons.policy().start().wait_for("policy_service_started", count=2)  # same log file: 2nd start
        phase = "back"
        await enough("back")
        stop.set()
        await asyncio.gather(*load)
        assert all(n.proc is not None and n.proc.poll() is None for n in nodes.values()), "a node daemon died"
    finally:
        stop.set()
        for nc in conns.values():
            await nc.close()
        daemons.stop_all()

    def replies(caller: str, name: str, node: str) -> list[tuple[Status, str]]:
        return [(r.status, r.message) for o in outcomes if o.caller == caller and o.began == o.ended == name
                for r in o.result.results if r.identity == node]

    # Every request was answered by both nodes, whatever the policy service was doing.
    assert all(not o.result.no_response and len(o.result.results) == 2 for o in outcomes)
    # Ground truth on the nodes: nothing of mallory's ever ran; every "OK" is one command that ran.
    lines = ran.read_text().splitlines()
    assert "mallory" not in lines
    assert lines.count("admin") == sum(r.ok for o in outcomes for r in o.result.results)
    assert all(not r.ok and r.message.startswith("not authorized: ")
               for o in outcomes if o.caller == "mallory" for r in o.result.results)

    denied = "not authorized: no rule allows cert=mallory to run shell.run; policy default deny (default.policy:3)"
    for node in (uncached, cached):
        assert set(replies("admin", "up", node)) == {(Status.OK, "OK")}
        assert set(replies("mallory", "up", node)) == {(Status.ABORTED, denied)}
        assert set(replies("admin", "back", node)) == {(Status.OK, "OK")}
        assert set(replies("mallory", "back", node)) == {(Status.ABORTED, denied)}
    # The outage: the node without a cache fails closed for everyone, with the reason ...
    for caller in ("admin", "mallory"):
        down = replies(caller, "down", uncached)
        assert down and all(status == Status.ABORTED and "not authorized: policy service unreachable" in message
                            for status, message in down), down
    # ... and the node with a cache keeps its cached decisions (for up to authz.cache_ttl).
    assert set(replies("admin", "down", cached)) == {(Status.OK, "OK")}
    assert set(replies("mallory", "down", cached)) == {(Status.ABORTED, denied)}
    print(f"\n{len(outcomes)} requests, {Counter(o.began for o in outcomes)}; {len(lines)} commands ran; "
          f"outage denials on {uncached}: {len(replies('admin', 'down', uncached))} (admin)")
    for daemon in nodes.values():
        assert "Traceback" not in daemon.log.read_text() and not daemon.events("authz_failed")
