"""A 3-server NATS cluster on loopback: discovery across servers, a server killed mid-run, NMC_AUDIT with 3 replicas."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nmc.audit.errors import AuditStreamError
from nmc.audit.publisher import AuditSettings, JetStreamAuditor
from nmc.audit.reader import AuditQuery, read_records
from nmc.audit.stream import STREAM, ensure_stream
from nmc.ops.broker.server import BrokerSettings
from nmc.ops.broker.cluster import LocalCluster
from tests.integration.auditkit import connect, trusting, until
from tests.integration.fleetkit import Fleet, FleetCA
from tests.proctools import gone


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three servers of one cluster, clustered JetStream healthy on each."""
    local = LocalCluster(BrokerSettings(port=0, store_dir=tmp_path / "js"), 3, tmp_path / "cluster")
    local.start()
    yield local
    local.stop()


async def test_nodes_on_every_server_are_discovered_from_each_server(cluster, test_ca: FleetCA):
    fleet = Fleet(url=cluster.urls[0], ca=test_ca)
    try:
        for i in range(6):
            await fleet.add(f"n{i}.test", {"server": i % 3}, servers=(cluster.urls[i % 3],))
        everyone = [f"n{i}.test" for i in range(6)]
        for url in cluster.urls:
            async with fleet.client(servers=[url], discovery_stall=0.5) as fc:
                found = await fc.discover()
                assert sorted(r.identity for r in found.results) == everyone, url
                # A fact-routed rpc from this server reaches exactly the nodes on another one.
                result = await fc.call("rpcutil", "ping", filter_expr="server=2", expect=["n2.test", "n5.test"])
                assert sorted(r.identity for r in result.results) == ["n2.test", "n5.test"]
    finally:
        await fleet.stop()


async def _audit_pairs(nc: Any, ca: FleetCA) -> set[tuple[str, str, str]]:
    return {(r["request_id"], r["identity"], r["phase"])
            async for r in read_records(nc.jetstream(), AuditQuery(), verifier=trusting(ca))}


async def test_a_server_killed_mid_run_loses_no_node_and_no_audit_record(cluster, test_ca: FleetCA, tmp_path):
    watcher = await connect(cluster.urls[1])
    fleet = Fleet(url=cluster.urls[0], ca=test_ca)
    try:
        info = await ensure_stream(watcher.jetstream(), replicas=3)
        assert info.config.num_replicas == 3
        everyone = [f"n{i}.test" for i in range(6)]
        for i, identity in enumerate(everyone):
            # Each node lists every server, its "own" first, as server.cfg would.
            urls = (cluster.urls[i % 3], *[u for u in cluster.urls if u != cluster.urls[i % 3]])
            auditor = JetStreamAuditor(AuditSettings(spool=tmp_path / "spool" / f"{identity}.spool",
                                                     ack_timeout=0.5, replicas=3))
            await fleet.add(identity, servers=urls, auditor=auditor)
        made: list[tuple[str, list[str]]] = []  # (request id, nodes that answered)
        async with fleet.client(servers=cluster.urls, discovery_stall=0.5) as fc:
            victim = cluster.brokers[0]
            pid = victim.pid
            assert pid is not None
            for round_ in range(12):
                if round_ == 4:
                    os.kill(pid, signal.SIGKILL)  # mid-run: requests before, during and after
                    assert await gone(pid)
                result = await fc.call("rpcutil", "ping", expect=everyone, timeout=3)
                made.append((result.request_id, [r.identity for r in result.results]))

            async def all_back() -> bool:
                return all(n.nc is not None and n.nc.is_connected for n in fleet.nodes)

            await until(all_back, 20, "every node to reconnect to a surviving server")
            found = await fc.discover()
            assert sorted(r.identity for r in found.results) == everyone
            after = await fc.call("rpcutil", "ping", expect=everyone, timeout=5)
            assert sorted(r.identity for r in after.results) == everyone
            made.append((after.request_id, [r.identity for r in after.results]))
        assert len(made[-1][1]) == 6 and all(answered for _, answered in made[5:])
        wanted = {(rid, who, phase) for rid, answered in made for who in answered for phase in ("decision", "result")}
        have: set[tuple[str, str, str]] = set()

        async def every_record_kept() -> bool:
            nonlocal have
            try:
                have = await _audit_pairs(watcher, test_ca)
            except Exception:  # noqa: BLE001 - stream leader moving to a survivor
                return False
            return wanted <= have

        await until(every_record_kept, 30, "every audit record of every answered request in NMC_AUDIT")
        stream = await watcher.jetstream().stream_info(STREAM)
        assert stream.config.num_replicas == 3
        assert stream.cluster is not None and stream.cluster.leader != victim.settings.server_name
    finally:
        await fleet.stop()
        await watcher.close()


async def test_three_replicas_on_a_single_server_is_a_clear_error(nats_server):
    nc = await connect(nats_server.url)
    try:
        with pytest.raises(AuditStreamError) as caught:
            await ensure_stream(nc.jetstream(), replicas=3)
        assert "not clustered" in caught.value.reason and "plugin.nats.jetstream_replicas" in caught.value.reason
        assert "\n" not in str(caught.value)
    finally:
        await nc.close()
