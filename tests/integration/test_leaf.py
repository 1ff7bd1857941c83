"""A site's leaf server joined to a hub: a node connected only to the leaf is discovered and answers from the hub."""

from __future__ import annotations

import ssl
from pathlib import Path

import nats

from nmc.audit.publisher import AuditSettings, JetStreamAuditor
from nmc.audit.reader import AuditQuery, read_records
from nmc.client.fleet import ClientSettings, FleetClient
from nmc.client.registry import registry_discover
from nmc.ops import pki
from nmc.ops.broker.server import Broker, BrokerSettings
from nmc.ops.broker.authorization import (
    BROKER_ROLE,
    LEAF_ROLE,
    Scope,
    TrustSources,
    secure_broker_settings,
)
from nmc.ops.broker.cluster import LeafHub, LeafRemote, free_ports, secure_peers
from nmc.security.names import inbox_prefix
from nmc.services.agents import BUILTIN_AGENTS
from nmc.services.facts import NodeFacts
from nmc.services.node import Node, NodeSettings
from nmc.services.registry import RegistryPublisher, RegistrySettings
from tests.integration.auditkit import connect, trusting, until
from tests.integration.fleetkit import Fleet, FleetCA


def _hub_and_leaf(tmp_path: Path, *, ca: Path | None = None) -> tuple[Broker, Broker]:
    """A hub with JetStream accepting leafs, and a site leaf dialling it (TLS from `ca` when given)."""
    hub_port, hub_leaf_port, site_port = free_ports("127.0.0.1", 3)
    hub = BrokerSettings(port=hub_port, store_dir=tmp_path / "hub" / "jetstream", server_name="hub")
    site = BrokerSettings(port=site_port, server_name="site1")
    hub_auth = site_auth = None
    scheme = "nats"
    if ca is not None:
        hub, hub_auth = secure_broker_settings(hub, TrustSources(ca_dir=ca, server_name="hub"),
                                               Scope(jetstream_domain="hub"))
        site, site_auth = secure_broker_settings(site, TrustSources(ca_dir=ca, server_name="site1",
                                                                    server_roles=(BROKER_ROLE, LEAF_ROLE)))
        scheme = "tls"
    hub = secure_peers(hub, hub_auth, hub=LeafHub("127.0.0.1", hub_leaf_port))
    site = secure_peers(site, site_auth, remote=LeafRemote((f"{scheme}://127.0.0.1:{hub_leaf_port}",)))
    return Broker(hub, tmp_path / "hub"), Broker(site, tmp_path / "site1")


async def _leaf_connected(broker: Broker) -> None:
    async def connected() -> bool:
        return "Leafnode connection created" in "\n".join(broker.log_lines(50))
    await until(connected, 10, f"{broker.settings.server_name} to log its leaf connection")


async def test_node_behind_a_leaf_is_discovered_and_answers_rpc_from_the_hub(tmp_path, test_ca: FleetCA):
    hub, leaf = _hub_and_leaf(tmp_path)
    with hub, leaf:
        await _leaf_connected(leaf)
        site = Fleet(url=leaf.url, ca=test_ca)
        central = Fleet(url=hub.url, ca=test_ca)
        try:
            auditor = JetStreamAuditor(AuditSettings(spool=tmp_path / "spool" / "far.spool", ack_timeout=1))
            await site.add("far.site1.test", {"site": "site1"}, auditor=auditor)
            await central.add("near.hub.test", {"site": "hub"})
            async with central.client(discovery_stall=0.5) as fc:
                found = await fc.discover()
                assert sorted(r.identity for r in found.results) == ["far.site1.test", "near.hub.test"]
                result = await fc.call("rpcutil", "get_fact", {"fact": "site"}, filter_expr="site=site1",
                                       expect=["far.site1.test"])
                assert [(r.identity, r.data["value"]) for r in result.results] == [("far.site1.test", "site1")]
            # The site node's audit records reach the hub's JetStream through the leaf (domain mapping).
            watcher = await connect(hub.url)
            try:
                async def audited() -> bool:
                    records = [r async for r in read_records(watcher.jetstream(), AuditQuery(),
                                                             verifier=trusting(test_ca))]
                    return {(r["request_id"], r["phase"]) for r in records} >= {(result.request_id, "decision"),
                                                                                 (result.request_id, "result")}
                await until(audited, 15, "the site node's audit records in the hub's NMC_AUDIT")
            finally:
                await watcher.close()
        finally:
            await site.stop()
            await central.stop()


async def test_a_node_behind_a_leaf_registers_in_the_hubs_registry(tmp_path, test_ca: FleetCA):
    """Registry puts ($KV.nmc_registry.*) do not cross a leaf by themselves: the leaf maps them to the hub's domain."""
    hub, leaf = _hub_and_leaf(tmp_path)
    with hub, leaf:
        await _leaf_connected(leaf)
        site = Fleet(url=leaf.url, ca=test_ca)
        try:
            publisher = RegistryPublisher(RegistrySettings(interval=30))
            await site.add("far.site1.test", {"site": "site1"}, companions=[publisher])
            watcher = await connect(hub.url)
            try:
                async def registered() -> bool:
                    try:
                        return {e.identity for e in await registry_discover(watcher, "nmc", "site=site1")} == {
                            "far.site1.test"}
                    except Exception:  # noqa: BLE001 - the bucket may not exist yet
                        return False
                await until(registered, 15, "the site node's record in the hub's registry bucket")
                assert publisher.puts >= 1
            finally:
                await watcher.close()
        finally:
            await site.stop()


def _tls(ca: Path, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    paths = pki.issued_paths(ca, name)
    ctx.load_cert_chain(str(paths.certificate), str(paths.key))
    return ctx


async def test_tls_leaf_with_a_leaf_certificate_carries_a_site_node_to_a_hub_user(tmp_path, test_ca: FleetCA):
    ca = test_ca.directory
    pki.issue(ca, "site1", roles=(BROKER_ROLE, LEAF_ROLE), server=True)
    for name, roles in (("far.site1.test", ("node",)), ("alice", ("user",))):
        test_ca.signer(name, roles=roles)
    hub, leaf = _hub_and_leaf(tmp_path, ca=ca)
    with hub, leaf:
        await _leaf_connected(leaf)
        # A real Node on the leaf with its own certificate (TLS, the leaf's per-certificate permissions).
        node = Node(settings=NodeSettings(identity="far.site1.test", collective="nmc", servers=(leaf.url,),
                                          tls=_tls(ca, "far.site1.test"), reconnect_wait=0.1),
                    signer=test_ca.signer("far.site1.test"), verifier=test_ca.verifier(),
                    agent_classes=BUILTIN_AGENTS, facts=NodeFacts(facts={"site": "site1"}))
        await node.start()
        try:
            alice = await nats.connect(hub.url, tls=_tls(ca, "alice"), inbox_prefix=inbox_prefix("alice"))
            try:
                fc = FleetClient(nc=alice, signer=test_ca.signer("alice"), verifier=test_ca.verifier(),
                                 settings=ClientSettings(collective="nmc", discovery_stall=0.5))
                found = await fc.discover()
                assert [r.identity for r in found.results] == ["far.site1.test"]
                result = await fc.call("rpcutil", "get_fact", {"fact": "site"}, expect=["far.site1.test"])
                assert [(r.identity, r.data["value"]) for r in result.results] == [("far.site1.test", "site1")]
            finally:
                await alice.drain()
        finally:
            await node.stop()
