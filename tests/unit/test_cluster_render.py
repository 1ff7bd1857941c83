"""The pure half of clusters and leaf nodes: cluster/leaf blocks, local cluster plans, leaf permissions."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nmc.cli.main import cli
from nmc.ops.broker.server import BrokerError, BrokerSettings, render_config
from nmc.ops.broker.authorization import Scope, leaf_permissions
from nmc.ops.broker.cluster import (
    ClusterSpec,
    LeafHub,
    LeafRemote,
    PeerTLS,
    plan_local_cluster,
    render_cluster,
    render_leaf_hub,
    render_leaf_remote,
    secure_peers,
)


def test_cluster_block_names_the_cluster_its_listen_and_every_route():
    text = render_cluster(ClusterSpec(name="nmc", host="127.0.0.1", port=6222,
                                      routes=("nats-route://a:6222", "nats-route://b:6222")))
    assert text.splitlines() == ['cluster {', '  name: "nmc"', '  listen: "127.0.0.1:6222"', '  routes: [',
                                 '    "nats-route://a:6222"', '    "nats-route://b:6222"', '  ]', '}']


def test_route_tls_verifies_and_pins_peer_brokers():
    tls = PeerTLS(cert=Path("/c.pem"), key=Path("/k.pem"), ca=Path("/ca.pem"), pinned=("ab" * 32,))
    text = render_cluster(ClusterSpec(name="nmc", host="0.0.0.0", port=6222, tls=tls))
    assert "verify: true" in text and f'"{"ab" * 32}"' in text and "verify_and_map" not in text


def test_hub_maps_leaf_certificates_and_leaf_dials_with_its_certificate_and_maps_jetstream():
    tls = PeerTLS(cert=Path("/c.pem"), key=Path("/k.pem"), ca=Path("/ca.pem"), pinned=("cd" * 32,))
    hub = render_leaf_hub(LeafHub(host="0.0.0.0", port=7422, tls=tls))
    assert 'listen: "0.0.0.0:7422"' in hub and "verify_and_map: true" in hub
    leaf = render_leaf_remote(LeafRemote(urls=("tls://hub1:7422", "tls://hub2:7422"), tls=tls, hub_domain="hq"))
    assert '"$JS.API.>": "$JS.hq.API.>"' in leaf
    assert '"$KV.>": "$JS.hq.API.$KV.>"' in leaf  # registry puts reach the hub's bucket
    assert '"tls://hub1:7422"' in leaf and '"tls://hub2:7422"' in leaf and 'cert_file: "/c.pem"' in leaf
    assert "verify" not in leaf and "pinned_certs" not in leaf  # the dialling side only presents its certificate


def test_local_cluster_plan_gives_each_server_its_name_store_and_all_routes(tmp_path):
    base = BrokerSettings(port=0, store_dir=tmp_path / "js")
    plan = plan_local_cluster(base, 3, root=tmp_path, client_ports=[4001, 4002, 4003], route_ports=[6001, 6002, 6003])
    assert [s.server_name for s in plan] == ["nmc-1", "nmc-2", "nmc-3"]
    assert [s.port for s in plan] == [4001, 4002, 4003]
    assert len({s.store_dir for s in plan}) == 3
    for settings in plan:
        text = render_config(settings)
        assert all(f"nats-route://127.0.0.1:{p}" in text for p in (6001, 6002, 6003))
        assert 'name: "nmc"' in text


def test_plain_hub_gets_a_jetstream_domain_and_a_leaf_drops_its_own_jetstream(tmp_path):
    hub = secure_peers(BrokerSettings(port=4222, store_dir=tmp_path / "js"), None, hub=LeafHub("127.0.0.1", 7422))
    assert 'domain: "hub"' in render_config(hub)
    leaf = secure_peers(BrokerSettings(port=4223, store_dir=tmp_path / "js2"), None,
                        remote=LeafRemote(("nats://127.0.0.1:7422",)))
    assert leaf.store_dir is None and "jetstream {" not in render_config(leaf)


@pytest.mark.parametrize("bad", [
    lambda: ClusterSpec(name="my cluster", host="127.0.0.1", port=6222),
    lambda: ClusterSpec(name="nmc", host="127.0.0.1", port=6222, routes=("hostonly:6222",)),
    lambda: LeafRemote(urls=()),
    lambda: LeafRemote(urls=("hub:7422",)),
    lambda: secure_peers(BrokerSettings(), None, hub=LeafHub("127.0.0.1", 7422)),  # a hub without JetStream
])
def test_mistakes_are_one_line_broker_errors(bad):
    with pytest.raises(BrokerError) as caught:
        bad()
    assert "\n" not in str(caught.value)


def test_leaf_permissions_cover_the_collective_and_the_hub_domain_only():
    perms = leaf_permissions("site1", Scope(collective="prod", jetstream_domain="hub"))
    assert "nmc.prod.>" in perms.subscribe and "_INBOX.>" in perms.subscribe
    assert not any(s.startswith(("nmc.other", "$SYS")) or s == ">" for s in perms.publish)
    js = [s for s in perms.publish if s.startswith("$JS.")]
    assert js and all(s.startswith("$JS.hub.API.") for s in js)
    assert "$JS.hub.API.STREAM.MSG.GET.NMC_AUDIT" in perms.publish and not perms.allow_responses
    assert not any("STREAM.DELETE" in s or "STREAM.CREATE" in s or "CONSUMER" in s for s in perms.publish)


def test_cli_config_rejects_leaf_and_routes_together_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["ops", "broker", "config", "--ca-dir", str(tmp_path / "ca"),
                                      "--leaf-of", "tls://hub:7422", "--route", "nats-route://a:6222"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--leaf-of" in result.output


def test_cli_cluster_print_config_shows_three_servers(tmp_path):
    result = CliRunner().invoke(cli, ["ops", "broker", "--cluster", "3", "--port", "14222", "--cluster-port", "16222",
                                      "--store", str(tmp_path / "b" / "js"), "--print-config"])
    assert result.exit_code == 0, result.output
    assert [ln for ln in result.output.splitlines() if ln.startswith("# ---- ")] == [
        "# ---- nmc-1", "# ---- nmc-2", "# ---- nmc-3"]
    assert 'listen: "127.0.0.1:14223"' in result.output and '"nats-route://127.0.0.1:16224"' in result.output
