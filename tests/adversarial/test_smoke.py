"""The fleet under attack works for its legitimate users (every other test in this folder builds on it)."""

from __future__ import annotations

from tests.adversarial.kit import HostileFleet


async def test_admin_reaches_every_node_and_mallory_is_denied(hostile: HostileFleet):
    async with hostile.client("admin") as fc:
        result = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
    assert sorted(r.identity for r in result.results if r.status == 0) == hostile.identities
    async with hostile.client("mallory") as fc:
        result = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
    assert sorted(r.identity for r in result.results) == hostile.identities
    assert {r.status for r in result.results} == {1}, "mallory is denied by the policy everywhere"
