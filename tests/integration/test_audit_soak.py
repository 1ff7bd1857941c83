"""Issue 7's promise end to end: every action leaves exactly one decision and one result record in the file.

2,000 requests go to 10 nodes (each request to all of them) while the audit
service is killed (SIGKILL: it may have written records it never
acknowledged), started again, stopped cleanly, started again, and while the
broker itself restarts once (nodes spool what the stream cannot take, then
resend). Ground truth is what the nodes actually ran, recorded by the agent.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from nmc.audit.position import default_position_file
from nmc.audit.publisher import AuditSettings, JetStreamAuditor
from nmc.audit.stream import STREAM
from nmc.client.fleet import ClientSettings, FleetClient
from nmc.services.agent import ActionRequest, Agent, action
from tests.integration.auditkit import (
    AuditProcess,
    caught_up,
    connect,
    record_counts,
    until,
    write_audit_cfg,
)

NODES, REQUESTS, CONCURRENCY = 10, 2000, 24


def make_agent(ran: set[tuple[str, str]], running: list[int], go: asyncio.Event) -> type[Agent]:
    class Soak(Agent):
        name = "soak"
        description = "records what ran, takes a few milliseconds"

        @action("do a little work")
        async def work(self, req: ActionRequest) -> dict[str, Any]:
            ran.add((req.request_id, self.node.identity))
            running[0] += 1
            try:
                # Some actions are still running when the broker goes away: their results must be spooled.
                await asyncio.sleep(random.uniform(0, 0.02))
                await go.wait()  # cleared while the broker is taken down: these finish while it is away
            finally:
                running[0] -= 1
            return {}

    return Soak


@pytest.mark.timeout(240)
async def test_exactly_one_decision_and_result_per_request_and_node_through_restarts(fleet, nats_server, tmp_path: Path):
    ran: set[tuple[str, str]] = set()
    running = [0]
    go = asyncio.Event()
    go.set()
    agent = make_agent(ran, running, go)
    audit_file = tmp_path / "audit" / "audit.jsonl"
    cfg = write_audit_cfg(tmp_path / "audit.cfg", nats_server.url, fleet.ca.directory / "ca.pem", file=audit_file,
                          rotate_bytes=2_000_000, keep=100)
    service = AuditProcess(cfg, tmp_path / "audit-service.log")
    nc = await connect(nats_server.url, as_name="alice")
    try:
        await service.start(nc)
        auditors = [JetStreamAuditor(AuditSettings(spool=tmp_path / "spool" / f"node{i}.spool", ack_timeout=1.0))
                    for i in range(1, NODES + 1)]
        for i, auditor in enumerate(auditors, 1):
            await fleet.add(f"node{i}.test", {"i": i}, agents=[agent], auditor=auditor)
        identities = [f"node{i}.test" for i in range(1, NODES + 1)]
        client = FleetClient(nc=nc, signer=fleet.ca.signer("alice"), verifier=fleet.ca.verifier(),
                             settings=ClientSettings(collective="nmc", timeout=5))

        complete = 0
        started = 0
        events: dict[int, str] = {300: "kill audit", 600: "start audit", 900: "restart broker",
                                  1300: "stop audit", 1500: "start audit"}
        done_events: list[str] = []
        lock = asyncio.Lock()

        async def chaos(at: int) -> None:
            what = events[at]
            if what == "kill audit":
                service.stop(signal.SIGKILL)
            elif what == "stop audit":
                assert service.stop(signal.SIGTERM) == 0
            elif what == "start audit":
                await service.start(nc)
            elif what == "restart broker":
                # Hold actions in their run, take the broker down, let them finish: their result records
                # cannot reach the stream and must be spooled (and resent once the broker is back).
                go.clear()
                await until(lambda: _true(running[0] > 0), 30, "some action to be running")
                await asyncio.to_thread(nats_server.stop)
                go.set()
                await until(lambda: _true(running[0] == 0), 30, "the held actions to finish")
                await asyncio.to_thread(nats_server.start)
            done_events.append(what)

        async def worker() -> None:
            nonlocal complete, started
            while complete < REQUESTS:
                started += 1
                if started in events:
                    async with lock:
                        await chaos(started)
                if not nc.is_connected:
                    await until(lambda: _true(nc.is_connected), 30, "the client to reconnect")
                try:
                    result = await client.call("soak", "work", {}, expect=identities, timeout=5)
                except Exception:  # noqa: BLE001 - a request lost in the broker restart: send another
                    continue
                if len(result.results) == NODES and all(r.ok for r in result.results):
                    complete += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        assert complete >= REQUESTS
        assert done_events == ["kill audit", "start audit", "restart broker", "stop audit", "start audit"]

        # Settle: no action running, every spool resent, the audit service's saved position past the stream's end.
        await until(lambda: _true(running[0] == 0), 30, "running actions to end")
        # A record whose acknowledgement was lost in the broker restart goes to the spool only when its
        # ack_timeout has passed: wait until none is in flight, then until every spool is resent.
        await until(lambda: _true(all(a.in_flight == 0 for a in auditors)), 30, "the nodes' records in flight")
        await until(lambda: _true(all(len(a.spool) == 0 and a.in_flight == 0 for a in auditors)), 60,
                    "the nodes' spools to drain")
        await until(lambda: caught_up(nc, default_position_file(audit_file)), 60,
                    "the audit service to write everything and save its position")
        elapsed = time.monotonic() - t0

        counts = record_counts(audit_file)
        expected = {(rid, ident, phase) for rid, ident in ran for phase in ("decision", "result")}
        extra = set(counts) - expected
        missing = expected - set(counts)
        repeated = {key: n for key, n in counts.items() if n != 1}
        assert not missing, f"{len(missing)} records missing from the file, e.g. {sorted(missing)[:3]}"
        assert not extra, f"{len(extra)} records nobody ran, e.g. {sorted(extra)[:3]}"
        assert not repeated, f"{len(repeated)} records written more than once, e.g. {list(repeated.items())[:3]}"
        assert len(counts) == 2 * len(ran) >= 2 * NODES * REQUESTS
        # The stream itself de-duplicated the resends too (they all came within its window).
        info = await nc.jetstream().stream_info(STREAM)
        assert info.state.messages == len(counts)
        spooled = sum(a.resent for a in auditors)
        assert spooled > 0, "the broker restart should have made some node spool and resend records"
        assert len(list(audit_file.parent.glob("audit.jsonl.[0-9]*"))) >= 2, "the file should have been rotated"
        print(f"\n{complete} complete requests, {len(ran)} actions, {spooled} records resent from spools, "
              f"{elapsed:.1f}s")
    finally:
        service.ensure_stopped()
        await nc.close()


async def _true(value: bool) -> bool:
    return value
