"""Issue 14 hole 4: a revoked certificate is refused by every daemon and the client, by default, without a restart.

The documented steps revoke the certificate (`nmc ops ca revoke`, which writes the CA
directory's `crl.pem`). The broker is NOT reloaded here: the attacker's connection with
the revoked certificate is already up, and the broker only checks certificates at the
TLS handshake. What must stop the attacker is every signature check: nodes, the policy
service and the client read the CA's CRL by default and pick up a new one on the fly.
"""

from __future__ import annotations

import asyncio
import time

from nmc.protocol.authz import AuthzAnswer, AuthzQuestion
from nmc.client.fleet import ClientSettings, FleetClient
from nmc.ops import pki
from nmc.protocol.envelope import Reply
from nmc.protocol.subjects import all_subject, authz_subject
from tests.adversarial.kit import HostileFleet, gather_replies, until


async def test_a_revoked_users_requests_are_refused_by_every_node_without_a_restart(hostile: HostileFleet):
    # The attacker holds admin's key and an open connection with admin's certificate.
    admin = await hostile.connect_as("admin")
    client = FleetClient(nc=admin, signer=hostile.signer("admin"), verifier=hostile.verifier(),
                         settings=ClientSettings(collective="nmc"))
    subject = all_subject("nmc", "rpcutil", "ping")

    async def replies() -> list[Reply]:
        _, body, headers = client.build_request("rpcutil", "ping", {}, "")
        return [Reply.from_bytes(m.data) for m in await gather_replies(admin, subject, body, headers, count=3)]

    assert all(r.ok for r in await replies())  # before: admin may do everything
    await asyncio.to_thread(pki.revoke, hostile.layout.ca_dir, "admin", reason="keyCompromise")

    async def all_refuse() -> bool:
        return all(not r.ok and "is revoked" in r.message for r in await replies())

    await until(all_refuse, 10, "every node to refuse the revoked certificate's requests")
    assert sorted(r.identity for r in await replies()) == hostile.identities


async def test_a_revoked_nodes_questions_and_replies_are_refused_without_a_restart(hostile: HostileFleet):
    attacker = await hostile.connect_as("node9.example.net")  # compromised node: its key and its connection
    signer = hostile.signer("node9.example.net")

    async def ask() -> AuthzAnswer:
        body = AuthzQuestion(request_id=f"q-{time.monotonic_ns()}", caller="cert=admin", agent="rpcutil",
                             action="ping", identity="node9.example.net").to_bytes()
        msg = await attacker.request(authz_subject("nmc"), body, headers=signer.headers(body), timeout=5)
        return AuthzAnswer.from_bytes(msg.data)

    before = await ask()
    assert before.allowed and not before.error
    async with hostile.client("admin") as fc:  # a client that runs while the node is revoked
        result = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
        assert sorted(r.identity for r in result.results) == hostile.identities
        for name in ("node9.example.net", "node1.example.net"):
            await asyncio.to_thread(pki.revoke, hostile.layout.ca_dir, name, reason="keyCompromise")

        async def policy_refuses() -> bool:
            answer = await ask()
            return answer.error and not answer.allowed and "is revoked" in answer.reason

        await until(policy_refuses, 10, "the policy service to refuse the revoked node's questions")

        async def client_drops_node1() -> bool:
            result = await fc.call("rpcutil", "ping", {}, expect=hostile.identities, timeout=3)
            return result.dropped >= 1 and "node1.example.net" not in {r.identity for r in result.results}

        await until(client_drops_node1, 10, "the client to drop replies signed by the revoked node1")
