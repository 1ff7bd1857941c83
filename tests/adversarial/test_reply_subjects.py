"""Hole 8 (daemon side): a node and the policy service answer only into the asking certificate's own inbox.

The reply subject of a request is whatever its sender wrote. Aimed at another user's
inbox, another node's registry key or an audit subject, the node's signed answer
would land there (a confused deputy). Now a request whose reply subject lies outside
its caller's `_INBOX.<name>.` runs nothing and gets no answer, with a log line.
"""

from __future__ import annotations

from structlog.testing import capture_logs

from nmc.protocol.authz import AuthzQuestion
from nmc.protocol.registry import registry_key
from nmc.protocol.subjects import all_subject, authz_subject
from nmc.security.names import inbox_prefix
from tests.adversarial.kit import HostileFleet, until

AIMS = {
    "another user's inbox": f"{inbox_prefix('admin')}.stolen",
    "another node's registry key": f"$KV.nmc_registry.{registry_key('nmc', 'node2.example.net')}",
    "an audit subject": "nmc.audit.nmc.node2%2Eexample%2Enet",
}


def _refusals(logs: list[dict], request_id: str) -> list[dict]:
    return [e for e in logs if e.get("event") == "request_refused" and e.get("request_id") == request_id
            and "outside the caller's inbox" in e.get("reason", "")]


async def test_a_node_does_not_answer_outside_the_callers_inbox(hostile: HostileFleet):
    watcher = await hostile.connect_as("admin")
    landed = []

    async def land(msg) -> None:
        landed.append(msg)

    await watcher.subscribe(f"{inbox_prefix('admin')}.>", cb=land)
    await watcher.flush()
    mallory = await hostile.connect_as("mallory")
    async with hostile.client("mallory") as fc:
        requests = {aim: fc.build_request("rpcutil", "ping", {}, "") for aim in AIMS}
    with capture_logs() as logs:
        for aim, (req, body, headers) in requests.items():
            await mallory.publish(all_subject("nmc", "rpcutil", "ping"), body, reply=AIMS[aim], headers=headers)
        await mallory.flush()
        for aim, (req, _, _) in requests.items():
            await until(lambda: len(_refusals(logs, req.id)) == len(hostile.identities), 10,
                        f"every node refusing the reply subject of {aim}")
    assert not landed, "no node answered into admin's inbox"
    assert not [r for r in hostile.audit_records() if r["request_id"] in {q.id for q, _, _ in requests.values()}], \
        "nothing ran: no audit record"


async def test_the_policy_service_answers_only_the_asking_nodes_inbox(hostile: HostileFleet):
    node9 = await hostile.connect_as("node9.example.net")
    question = AuthzQuestion(request_id="q-hostile", caller="cert=admin", agent="rpcutil", action="ping",
                             identity="node9.example.net", facts={}, classes=())
    body = question.to_bytes()
    with capture_logs() as logs:
        await node9.publish(authz_subject("nmc"), body, reply=f"{inbox_prefix('node1.example.net')}.x",
                            headers=hostile.signer("node9.example.net").headers(body))
        await node9.flush()
        await until(lambda: any(e.get("event") == "authz_question_refused" and "outside the inbox" in
                                e.get("reason", "") for e in logs), 10, "the policy service refusing")
    # Its own inbox is answered as before.
    answer = await node9.request(authz_subject("nmc"), body, headers=hostile.signer("node9.example.net").headers(body),
                                 timeout=5)
    assert answer.data
