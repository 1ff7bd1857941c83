"""An independent ADR-32 peer sees every node: the npm `nats` services client (tests/interop/adr32_check.mjs).

nmc's micro service is its own code, so this checks it against a client written
by someone else. The npm package is pinned in tests/interop/package-lock.json;
CI installs it with `npm ci --prefix tests/interop`. A missing install FAILS
this test: it must never pass by being skipped.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from nmc import __version__
from nmc.protocol.filter import combine
from nmc.protocol.subjects import encode_token
from nmc.services.node import SERVICE_NAME
from tests.integration.npmkit import require_npm_client

REPO = Path(__file__).resolve().parents[2]
INTEROP = REPO / "tests" / "interop"
SCRIPT = INTEROP / "adr32_check.mjs"
RUN_TIMEOUT = 30.0


async def run_check(node_bin: str, url: str) -> dict[str, Any]:
    """Run adr32_check.mjs against `url` without blocking the event loop the nodes answer from."""
    proc = await asyncio.create_subprocess_exec(
        node_bin, str(SCRIPT), url, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"adr32_check.mjs did not finish within {RUN_TIMEOUT:g} s")
    assert proc.returncode == 0, f"adr32_check.mjs exited {proc.returncode}:\n{err.decode(errors='replace')}"
    return json.loads(out)


async def test_npm_services_client_sees_every_node(fleet):
    node_bin = require_npm_client()
    nodes = [
        await fleet.add("web1.example.com", {"country": "us"}, ["apache"]),
        await fleet.add("web2.example.com", {"country": "de"}),
        await fleet.add("db-1", {"country": "uk"}, ["mysql"]),
        await fleet.add("cache_1", {}),
    ]
    by_id = {n.service.id: n for n in nodes}
    # One real request, so the npm client's STATS must show a count on exactly one node.
    counted = nodes[2]
    async with fleet.client() as fc:
        result = await fc.call("rpcutil", "ping", {}, filter_expr=combine(identities=[counted.identity]),
                               expect=[counted.identity])
    assert [r.identity for r in result.results if r.ok] == [counted.identity]

    seen = await run_check(node_bin, fleet.url)

    for verb in ("ping", "info", "stats"):
        ids = [r["id"] for r in seen[verb]]
        assert sorted(ids) == sorted(by_id), f"npm {verb} saw {ids}, the fleet is {sorted(by_id)}"

    for p in seen["ping"]:
        node = by_id[p["id"]]
        assert p["type"] == "io.nats.micro.v1.ping_response"
        assert (p["name"], p["version"]) == (SERVICE_NAME, __version__)
        assert p["metadata"] == {"identity": node.identity, "collective": "nmc", "version": __version__}
    assert sorted(p["metadata"]["identity"] for p in seen["ping"]) == sorted(n.identity for n in nodes)

    for info in seen["info"]:
        node = by_id[info["id"]]
        assert info["type"] == "io.nats.micro.v1.info_response" and info["name"] == SERVICE_NAME
        assert isinstance(info["description"], str)
        endpoints = {e["name"]: e["subject"] for e in info["endpoints"]}
        assert endpoints["node"] == f"nmc.nmc.node.{encode_token(node.identity)}.>", node.identity
        assert set(endpoints.values()) == {ep.subject for ep in node.service.endpoints}

    for stats in seen["stats"]:
        node = by_id[stats["id"]]
        assert stats["type"] == "io.nats.micro.v1.stats_response"
        assert datetime.fromisoformat(stats["started"]).tzinfo is not None, stats["started"]
        eps = {e["name"]: e for e in stats["endpoints"]}
        assert set(eps) == {ep.name for ep in node.service.endpoints}
        for e in eps.values():
            assert isinstance(e["num_requests"], int) and isinstance(e["num_errors"], int), e
            assert e["num_errors"] == 0, e
        assert eps["node"]["num_requests"] == (1 if node is counted else 0), node.identity
        assert sum(e["num_requests"] for e in eps.values()) == (1 if node is counted else 0), node.identity
