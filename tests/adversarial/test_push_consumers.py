"""Hole 12: no role can make the broker deliver stored records where that role may not publish.

nats-server checks neither a push consumer's deliver subject nor the reply subject of a
pull request (`CONSUMER.MSG.NEXT`) or of a direct get against the permissions of whoever
asked (nats-server 2.15: server/consumer.go, server/jetstream_api.go). A user that could
create consumers had stored audit and registry records delivered onto another user's
inbox, onto `nmc.<c>.all.rpcutil.ping` and onto the policy question subject. Now no role,
the audit service's included, creates a consumer or fetches from one, nobody sends direct
gets, and readers (`nmc audit tail/query`, the audit service, registry discovery) read with
`STREAM.MSG.GET`, whose answer is the broker's JSON, never a raw stored message.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from nmc.audit.stream import STREAM
from nmc.client.registry import registry_discover
from nmc.security.names import inbox_prefix
from tests.adversarial.brokerkit import REFUSED, js_api, stream_info
from tests.adversarial.kit import HostileFleet, until

REGISTRY = "KV_nmc_registry"
ELSEWHERE = (f"{inbox_prefix('admin')}.stolen", "nmc.nmc.all.rpcutil.ping", "nmc.nmc.authz.check")
READERS = ("mallory", "admin", "node9.example.net", "nmc-policy", "nmc-audit", "nmc-operator", "site1")


def _consumer_requests(stream: str, name: str, deliver: str) -> list[tuple[str, Any]]:
    """Every subject form that makes a consumer (push, to `deliver`), and the ways to have records sent."""
    push = {"deliver_subject": deliver, "deliver_policy": "all", "ack_policy": "none"}
    api = "$JS.API.CONSUMER"
    return [
        (f"{api}.CREATE.{stream}", {"stream_name": stream, "config": push}),
        (f"{api}.CREATE.{stream}.{name}", {"stream_name": stream, "config": {**push, "name": name}}),
        (f"{api}.CREATE.{stream}.{name}.>", {"stream_name": stream,
                                            "config": {**push, "name": name, "filter_subject": ">"}}),
        (f"{api}.DURABLE.CREATE.{stream}.{name}", {"stream_name": stream, "config": {**push, "durable_name": name}}),
        (f"{api}.MSG.NEXT.{stream}.{name}", {"batch": 10}),
        (f"$JS.API.DIRECT.GET.{stream}", {"seq": 1}),
        (f"$JS.API.DIRECT.GET.{stream}.$KV.nmc_registry.>", b""),
    ]


async def test_readers_cannot_create_consumers_or_aim_deliveries(hostile: HostileFleet):
    errors: list[str] = []
    admin = await hostile.connect_as("admin", errors=errors)
    counts = {s: (await stream_info(admin, s, errors))["state"]["consumer_count"] for s in (STREAM, REGISTRY)}
    for name in READERS:
        own: list[str] = []
        nc = await hostile.connect_as(name, errors=own)
        for stream in (STREAM, REGISTRY):
            for deliver in ELSEWHERE:
                for subject, body in _consumer_requests(stream, "spy", deliver):
                    answer = await js_api(nc, subject, body, errors=own)
                    assert answer is REFUSED, f"{name} may send {subject} (deliver to {deliver}): {answer}"
    assert {s: (await stream_info(admin, s, errors))["state"]["consumer_count"] for s in counts} == counts


async def _nmc(config: Path, *args: str) -> list[dict[str, Any]]:
    """`nmc --config CONFIG ARGS... --json` as a user runs it: its JSON lines."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nmc", "--config", str(config), *args, "--json",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


async def test_audit_and_registry_readers_need_no_consumer(hostile: HostileFleet):
    config = hostile.client_config("admin").source
    assert config is not None
    async with hostile.client("admin") as fc:
        result = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
        errors: list[str] = []
        before = await stream_info(fc.nc, STREAM, errors)

        async def every_node() -> bool:  # the nodes' records reach the stream as they answer
            found = await _nmc(config, "audit", "query", "--phase", "result")
            return {r["identity"] for r in found if r["request_id"] == result.request_id} == set(hostile.identities)

        await until(every_node, 30, "every node's result record of the ping, read by `nmc audit query`")
        assert len(await _nmc(config, "audit", "tail", "-n", "2")) == 2
        entries = await registry_discover(fc.nc, "nmc", "")
        assert sorted(e.identity for e in entries) == hostile.identities
        after = await stream_info(fc.nc, STREAM, errors)
    assert after["state"]["consumer_count"] == before["state"]["consumer_count"] == 0  # the audit service has none
