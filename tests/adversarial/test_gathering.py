"""Hole 9: a compromised node cannot end or shorten other clients' gathering.

node9's certificate is a valid node's. It subscribes where every node does and answers
every broadcast first, with an empty message (ADR-47's "no more" sentinel) or with the
same `Status: 503` the broker uses for "no responders". Before, `nmc ping` and
`nmc rpc` of every user ended at once and reported no nodes; now those messages are
dropped and every real node is gathered.
"""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from nmc.protocol.subjects import all_subject
from tests.adversarial.kit import HostileFleet

SABOTAGE = {
    "empty message": (b"", None),
    "no-responders status": (b"", {"Status": "503"}),
    "no-responders status with a description": (b"", {"Status": "503", "Description": "No Responders"}),
}


@pytest.mark.parametrize("kind", sorted(SABOTAGE))
async def test_sabotaging_node_does_not_end_discovery_or_rpc(hostile: HostileFleet, kind: str):
    payload, headers = SABOTAGE[kind]
    node9 = await hostile.connect_as("node9.example.net")

    async def sabotage(msg: Msg) -> None:
        await node9.publish(msg.reply, payload, headers=headers)

    for subject in (all_subject("nmc", "rpcutil", "ping"), all_subject("nmc", "rpcutil", "get_fact")):
        await node9.subscribe(subject, cb=sabotage)
    await node9.flush()
    async with hostile.client("admin", timeout=5) as fc:
        found = await fc.discover()
        assert sorted(r.identity for r in found.results) == hostile.identities, found
        assert not found.no_responders
        result = await fc.call("rpcutil", "get_fact", {"fact": "role"}, expect=hostile.identities)
    assert sorted(r.identity for r in result.results if r.ok) == hostile.identities
    assert not result.no_response and not result.no_responders


async def test_direct_requests_cannot_be_answered_for_another_node(hostile: HostileFleet):
    """With direct addressing each node has its own unguessable reply subject: node9 cannot speak for node2."""
    node9 = await hostile.connect_as("node9.example.net")
    seen_replies: list[str] = []

    async def spy(msg: Msg) -> None:
        seen_replies.append(msg.reply)

    await node9.subscribe("nmc.nmc.node.node9%2Eexample%2Enet.>", cb=spy)
    await node9.flush()
    async with hostile.client("admin", timeout=5) as fc:
        result = await fc.call("rpcutil", "ping", {}, expect=[*hostile.identities, "node9.example.net"], direct=True)
    assert sorted(r.identity for r in result.results if r.ok) == hostile.identities
    assert result.no_response == ("node9.example.net",)
    assert len(seen_replies) == 1
    inbox, token = seen_replies[0].rsplit(".", 1)
    assert len(token) == 16, "a random per-target reply token"
