"""The audit service is SIGKILLed and restarted under load: requests keep flowing, no audit record is lost.

Two `nmc serve node` daemons answer a steady load of `rpcutil.ping` while
`nmc serve audit` (the dev fleet's audit.cfg) is killed with SIGKILL — it may
have written records whose position it never saved — and started again. Nodes
publish to the NMC_AUDIT stream whether or not the service runs, so requests
never wait for it; the service resumes at the position it saved last (it reads
the stream without a consumer) and drops what it already wrote. docs/audit.md
promises every record in the file exactly once: that is what is checked, for
every reply the client got. Authorization is off (`authz.mode = none`): one
process fewer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import nats
import pytest

from nmc.client.fleet import CallResult, ClientSettings, FleetClient
from nmc.ops.broker.server import Broker
from nmc.security.names import inbox_prefix
from nmc.audit.position import default_position_file
from tests.integration.auditkit import caught_up, record_counts
from tests.integration.daemonkit import DaemonFleet, until

WORKERS = 3
PER_PHASE = 40  # requests that begin and end inside one phase


@pytest.mark.timeout(150)
async def test_audit_service_killed_and_restarted_under_load_loses_no_record(nats_server: Broker, tmp_path: Path):
    daemons = DaemonFleet(tmp_path / "fleet", nats_server.url, 2, node_cfg={"authz.mode": "none"})
    phase = "up"
    outcomes: list[tuple[str, str, CallResult]] = []
    stop = asyncio.Event()
    nc = await nats.connect(nats_server.url, inbox_prefix=inbox_prefix(daemons.signer().name))
    try:
        audit = daemons.audit().start()
        await audit.wait_for("audit_service_started")
        await daemons.start_nodes()
        client = FleetClient(nc=nc, signer=daemons.signer(), verifier=daemons.verifier(),
                             settings=ClientSettings(collective="nmc", timeout=10))

        async def worker() -> None:
            while not stop.is_set():
                began = phase
                result = await client.call("rpcutil", "ping", {}, expect=daemons.identities, direct=True)
                outcomes.append((began, phase, result))

        async def enough(name: str) -> None:
            async def check() -> bool:
                return sum(began == ended == name for began, ended, _ in outcomes) >= PER_PHASE
            await until(check, 60, f"{PER_PHASE} requests in phase {name!r}")

        load = [asyncio.create_task(worker()) for _ in range(WORKERS)]
        await enough("up")
        phase = "killing"
        audit.kill()
        phase = "down"
        await enough("down")
        phase = "restarting"
        restarted = daemons.audit().start()
        await restarted.wait_for("audit_service_started", count=2)  # same log file: the second start
        phase = "back"
        await enough("back")
        stop.set()
        await asyncio.gather(*load)
        await until(lambda: caught_up(nc, default_position_file(daemons.audit_file)), 60,
                    "the audit service to write every record and save its position")
        assert restarted.stop() == 0
    finally:
        stop.set()
        await nc.close()
        daemons.stop_all()

    # Requests kept flowing while the audit service was away: every one answered OK by both nodes.
    assert all(len(r.results) == 2 and all(n.ok for n in r.results) for _, _, r in outcomes)
    assert Counter(began for began, ended, _ in outcomes if began == ended)["down"] >= PER_PHASE
    counts = record_counts(daemons.audit_file)
    expected = {(r.request_id, node.identity, kind) for _, _, r in outcomes for node in r.results
                for kind in ("decision", "result")}
    missing, extra = expected - set(counts), set(counts) - expected
    assert not missing, f"{len(missing)} audit records lost, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} records of requests nobody sent, e.g. {sorted(extra)[:3]}"
    repeated = {key: n for key, n in counts.items() if n != 1}
    assert not repeated, f"{len(repeated)} records written more than once, e.g. {list(repeated.items())[:3]}"
    print(f"\n{len(outcomes)} requests, {len(counts)} audit records, each written once; "
          f"duplicates dropped after the kill: {sum(e.get('count', 0) for e in restarted.events('audit_duplicates_dropped'))}")
