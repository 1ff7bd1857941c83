"""Hole 11: a filter's regular expression cannot stall the nodes (RE2, linear time).

mallory, whom the policy denies everything, broadcasts a request whose filter takes a
backtracking engine ~3**17 steps per node identity. Nodes evaluate the filter before
authorization, so with Python's `re` every node (and the policy service beside it)
was silent for 40-70 s. Now the admin's next ping is answered by every node at once.
"""

from __future__ import annotations

from nmc.protocol.envelope import Reply
from nmc.protocol.status import Status
from nmc.protocol.subjects import all_subject
from tests.adversarial.kit import HostileFleet

CATASTROPHIC = "identity(/^(?:.|.|.)*Q/)"


async def test_catastrophic_filter_does_not_stall_the_fleet(hostile: HostileFleet):
    attacker = await hostile.connect_as("mallory")
    async with hostile.client("mallory") as fc:
        _, body, headers = fc.build_request("rpcutil", "ping", {}, CATASTROPHIC)
    for _ in range(5):
        await attacker.publish(all_subject("nmc", "rpcutil", "ping"), body, headers=headers)
    await attacker.flush()
    async with hostile.client("admin", timeout=5) as fc:
        result = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
    assert sorted(r.identity for r in result.results if r.ok) == hostile.identities
    assert not result.no_response


async def test_backtracking_syntax_is_refused_by_the_node_with_a_reason(hostile: HostileFleet):
    """A filter RE2 cannot compile is refused with its reason, never evaluated by a backtracking engine."""
    async with hostile.client("admin", timeout=5) as fc:
        _, body, headers = fc.build_request("rpcutil", "ping", {}, "identity(/(node)\\1/)")
        reply = await fc.nc.request(all_subject("nmc", "rpcutil", "ping"), body, headers=headers, timeout=5)
    answer = Reply.from_bytes(reply.data)
    assert answer.status == Status.INVALID_DATA
    assert "backreferences" in answer.message
