"""The NATS CLI recipes of docs/nats-tools.md, run with the npm `nats` client (tests/interop/nats_recipes.mjs).

The Go `nats` CLI is not installed where the tests run, so the npm client (pinned in
tests/interop/package-lock.json) stands in for it, with the same connection flags: the broker
is configured the way `nmc dev up` configures it (mutual TLS, verify_and_map, per-role
permissions from the fleet CA), the nodes are built from server.cfg files by `build_node`,
and the recipes connect with a user certificate from that CA. A missing npm install FAILS
this test (`npm ci --prefix tests/interop`); it is never skipped.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from nmc import __version__
from nmc.ops import pki
from nmc.ops.broker.server import BrokerSettings
from nmc.ops.broker.authorization import Scope, TrustSources, secure_broker_settings
from nmc.ops.config.files import load_config
from nmc.ops.daemon.serve import build_node
from nmc.protocol.subjects import node_subject
from nmc.services.agents import BUILTIN_AGENTS
from tests.integration.npmkit import require_npm_client

REPO = Path(__file__).resolve().parents[2]
INTEROP = REPO / "tests" / "interop"
SCRIPT = INTEROP / "nats_recipes.mjs"
NODES = {"node1.example.net": "web", "node2.example.net": "db"}
POLICY = "policy default deny\nallow\tunsigned=nats\tget_fact ping\t*\nallow\tcert=alice\t*\t*\n"


class Recipes:
    """`nats <args>` as the npm stand-in, connected like the docs say: --tlscert/--tlskey/--tlsca/--inbox-prefix."""

    def __init__(self, url: str, ca_dir: Path, user: str) -> None:
        paths = pki.issued_paths(ca_dir, user)
        self.flags = ["-s", url, "--tlscert", str(paths.certificate), "--tlskey", str(paths.key),
                      "--tlsca", str(ca_dir / "ca.pem"), "--inbox-prefix", f"_INBOX.{user}"]
        self.node = require_npm_client()

    async def run(self, *args: str) -> str:
        """Its stdout; fails the test with its stderr when it exits non-zero."""
        proc = await asyncio.create_subprocess_exec(self.node, str(SCRIPT), *self.flags, *args, cwd=REPO,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"nats_recipes.mjs {' '.join(args)} did not finish within 30 s")
        assert proc.returncode == 0, f"nats_recipes.mjs {' '.join(args)}: {err.decode(errors='replace')}"
        return out.decode()


def _write_node_cfg(tmp_path: Path, url: str, ca_dir: Path, identity: str, role: str, policies: Path) -> Path:
    paths = pki.issued_paths(ca_dir, identity)
    ndir = tmp_path / identity
    ndir.mkdir()
    (ndir / "facts.yaml").write_text(f"role: {role}\n")
    values = {
        "identity": identity, "plugin.nats.servers": url, "factsource": "yaml", "plugin.yaml": "facts.yaml",
        "plugin.security.ca_file": ca_dir / "ca.pem", "plugin.security.cert_file": paths.certificate,
        "plugin.security.key_file": paths.key,
        "authz.mode": "local", "authz.policydir": policies,
        "security.unsigned_actions": "rpcutil.ping, rpcutil.get_fact",
        "audit.enabled": "false", "registerinterval": "0",  # not what these recipes are about
    }
    (ndir / "server.cfg").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    return ndir / "server.cfg"


@pytest.fixture
async def tls_fleet(nats_server_factory, tmp_path: Path) -> Any:
    """Two nodes behind a broker configured like the dev fleet's; yields (broker URL, CA dir, started nodes)."""
    ca_dir = tmp_path / "ca"
    pki.init_ca(ca_dir)
    pki.issue(ca_dir, "alice", roles=("user",))
    for identity in NODES:
        pki.issue(ca_dir, identity, roles=("node",))
    secured, _ = secure_broker_settings(BrokerSettings(), TrustSources(ca_dir=ca_dir), Scope())
    broker = nats_server_factory(**{k: getattr(secured, k) for k in ("tls_cert", "tls_key", "tls_ca", "tls_map",
                                                                      "tls_pinned", "authorization")})
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rpcutil.policy").write_text(POLICY)
    nodes = []
    for identity, role in NODES.items():
        cfg = load_config(_write_node_cfg(tmp_path, broker.url, ca_dir, identity, role, policies), kind="server",
                          env={})
        nodes.append(await build_node(cfg, agents=BUILTIN_AGENTS))
    try:
        for node in nodes:
            await node.start()
        yield broker.url, ca_dir, nodes
    finally:
        for node in nodes:
            if node.nc is not None and not node.nc.is_closed:
                await node.stop()


async def test_nats_cli_recipes_with_the_npm_client_over_tls(tls_fleet):
    url, ca_dir, nodes = tls_fleet
    assert url.startswith("tls://")
    nats = Recipes(url, ca_dir, "alice")
    node1 = next(n for n in nodes if n.identity == "node1.example.net")

    # Recipe 1: `nats micro ls nmc-node` lists every node as an instance of the nmc-node service.
    listed = json.loads(await nats.run("micro", "ls", "nmc-node"))
    assert sorted((n["metadata"]["identity"], n["id"]) for n in listed) == sorted(
        (n.identity, n.service.id) for n in nodes)
    assert {(n["name"], n["version"]) for n in listed} == {("nmc-node", __version__)}
    assert {n["description"] for n in listed} == {f"nmc node {i}" for i in NODES}

    # Recipe 3: `nats req nmc.nmc.node.node1%2Eexample%2Enet.rpcutil.get_fact '{"fact":"role"}'`.
    subject = node_subject("nmc", node1.identity, "rpcutil", "get_fact")
    assert subject == "nmc.nmc.node.node1%2Eexample%2Enet.rpcutil.get_fact"  # the subject the docs print
    printed = json.loads(await nats.run("req", subject, '{"fact":"role"}'))
    assert (printed["protocol"], printed["identity"], printed["status"], printed["message"]) == (
        "nmc.reply.v1", "node1.example.net", 0, "OK")
    assert printed["data"] == {"fact": "role", "value": "web"}
    assert len(printed["request_id"]) == 32
    pong = json.loads(await nats.run("req", node_subject("nmc", node1.identity, "rpcutil", "ping"), ""))
    assert pong["status"] == 0 and isinstance(pong["data"]["pong"], float)
    # Not in the node's security.unsigned_actions: the refusal is printed with its hint.
    refused = json.loads(await nats.run("req", node_subject("nmc", node1.identity, "rpcutil", "inventory"), ""))
    assert refused["status"] == 4
    assert refused["message"].endswith("; hint: rpcutil.inventory is not in this node's security.unsigned_actions")

    # Recipe 2: `nats micro info nmc-node <id>` and `nats micro stats nmc-node <id>` for that one node.
    info = json.loads(await nats.run("micro", "info", "nmc-node", node1.service.id))
    assert (info["id"], info["metadata"]["identity"]) == (node1.service.id, node1.identity)
    endpoints = {e["name"]: e["subject"] for e in info["endpoints"]}
    assert endpoints["node"] == "nmc.nmc.node.node1%2Eexample%2Enet.>"
    assert "nmc.nmc.all.rpcutil.*" in endpoints.values()
    assert "nmc.nmc.fact.role.web.>" in endpoints.values()
    stats = json.loads(await nats.run("micro", "stats", "nmc-node", node1.service.id))
    by_name = {e["name"]: e for e in stats["endpoints"]}
    assert stats["id"] == node1.service.id
    assert (by_name["node"]["num_requests"], by_name["node"]["num_errors"]) == (3, 1)  # the three requests above
    assert by_name["node"]["last_error"].endswith("is not in this node's security.unsigned_actions")
