"""Issue 14 hole 10 (and the audit part of hole 2): a node's certificate must not buy another node's audit trail.

The attacker holds `node9.example.net`'s key and connection. The broker lets it
publish on its own audit subject only, but JetStream de-duplicates by
`Nats-Msg-Id` across the whole stream and the audit service used to believe
whatever identity a record claimed:

- a record published on node9's subject claiming to be node1's must never be
  written as node1's (unsigned, or signed by node9: both refused, counted);
- a record published early with another node's message id must not make the
  stream drop that node's real record (ids are namespaced and unguessable);
- a node that runs a request again after a restart keeps the records of both
  runs (each record has its own id), whether or not the replay is refused.
"""

from __future__ import annotations

import json
from typing import Any

from nmc.client.fleet import ClientSettings, FleetClient
from nmc.protocol.audit import AuditRecord
from nmc.protocol.envelope import Reply
from nmc.protocol.subjects import all_subject, audit_subject
from tests.adversarial.kit import HostileFleet, gather_replies, until

ATTACKER = "node9.example.net"
VICTIM = "node1.example.net"


def forged(request_id: str, identity: str, phase: str, **kw: Any) -> AuditRecord:
    """A plausible record: what the attacker wants the trail to say."""
    fields: dict[str, Any] = dict(phase=phase, request_id=request_id, request_time=1764072000.0,
                                  caller="cert=nobody", sender="attacker", identity=identity, collective="nmc",
                                  agent="rpcutil", action="ping", allowed=False, rule="forged", time=1764072000.0)
    fields.update(kw)
    return AuditRecord(**fields)


def body_of(record: AuditRecord) -> bytes:
    return json.dumps(record.to_dict(), separators=(",", ":")).encode()


def written(hostile: HostileFleet, request_id: str) -> list[dict[str, Any]]:
    return [r for r in hostile.audit_records() if r["request_id"] == request_id]


async def test_a_record_claiming_another_nodes_identity_is_never_written_as_its(hostile: HostileFleet):
    errors: list[str] = []
    nc = await hostile.connect_as(ATTACKER, errors=errors)
    js = nc.jetstream()
    own_subject = audit_subject("nmc", ATTACKER)  # the one audit subject the broker lets node9 publish on
    unsigned = forged("forged-unsigned", VICTIM, "decision")
    await js.publish(own_subject, body_of(unsigned), headers={"Nats-Msg-Id": "forged-1"})
    # Signed with node9's own valid certificate, still claiming node1.
    claimed = forged("forged-signed", VICTIM, "decision")
    body = body_of(claimed)
    await js.publish(own_subject, body, headers={"Nats-Msg-Id": "forged-2", **hostile.signer(ATTACKER).headers(body)})
    # About node9 itself, but for a collective whose subject it is not on.
    other = body_of(forged("forged-subject", ATTACKER, "decision", collective="other"))
    await js.publish(own_subject, other, headers={"Nats-Msg-Id": "forged-3", **hostile.signer(ATTACKER).headers(other)})
    # About node9, signed with another certificate the attacker holds: a user's is no node's.
    by_user = body_of(forged("forged-by-user", ATTACKER, "decision"))
    ack = await js.publish(own_subject, by_user, headers={"Nats-Msg-Id": "forged-4",
                                                          **hostile.signer("mallory").headers(by_user)})
    await hostile.audit_consumed(ack.seq)

    for request_id in ("forged-unsigned", "forged-signed", "forged-subject", "forged-by-user"):
        assert written(hostile, request_id) == [], f"{request_id} was written to the audit trail"
    assert hostile.audit is not None and hostile.audit.counters.refused == 4
    assert errors == []  # the broker did let node9 publish there: only the audit service stands in the way

    # The service is alive and writes genuine records afterwards.
    async with hostile.client("admin") as fc:
        result = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
    await until(lambda: len(written(hostile, result.request_id)) == 6, 15, "the genuine records of the next request")


async def test_a_node_that_knows_a_request_id_first_cannot_preempt_other_nodes_records(hostile: HostileFleet):
    attacker = await hostile.connect_as(ATTACKER)
    js = attacker.jetstream()
    admin = await hostile.connect_as("admin")
    client = FleetClient(nc=admin, signer=hostile.signer("admin"), verifier=hostile.verifier(),
                         settings=ClientSettings(collective="nmc"))
    request, body, headers = client.build_request("rpcutil", "ping", {}, "")
    # node9 heard the request (it subscribes every broadcast) before the others wrote their records:
    # it publishes records under every message id it can think of for each victim.
    for identity in hostile.identities:
        for phase in ("decision", "result"):
            fake = forged(request.id, identity, phase)
            for msg_id in (f"{request.id}:{identity}:{phase}", f"{identity}:{request.id}:{phase}",
                           f"{identity.replace('.', '%2E')}:{request.id}:{phase}"):
                await js.publish(audit_subject("nmc", ATTACKER), body_of(fake), headers={"Nats-Msg-Id": msg_id})
    replies = await gather_replies(admin, all_subject("nmc", "rpcutil", "ping"), body, headers, count=3)
    assert sorted(Reply.from_bytes(m.data).identity for m in replies) == hostile.identities
    assert all(Reply.from_bytes(m.data).ok for m in replies)

    def genuine() -> list[tuple[str, str]]:
        return sorted((r["identity"], r["phase"]) for r in written(hostile, request.id) if r["caller"] == "cert=admin")

    expected = sorted((identity, phase) for identity in hostile.identities for phase in ("decision", "result"))
    await until(lambda: genuine() == expected, 15, "every node's own decision and result records in the trail")
    assert all(r["caller"] == "cert=admin" and r["allowed"] for r in written(hostile, request.id))


async def test_a_request_run_again_after_a_restart_keeps_the_records_of_every_run(hostile: HostileFleet):
    # node9 hears every broadcast; mallory (a user: may publish requests) replays what it heard.
    attacker = await hostile.connect_as(ATTACKER)
    heard: list[Any] = []

    async def hear(msg: Any) -> None:
        heard.append(msg)

    await attacker.subscribe("nmc.nmc.all.>", cb=hear)
    await attacker.flush()
    async with hostile.client("admin") as fc:
        first = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
    assert all(r.ok for r in first.results)
    await until(lambda: any(m.headers and m.subject.endswith("rpcutil.ping") for m in heard), 5, "node9 to hear it")
    captured = next(m for m in heard if m.subject.endswith("rpcutil.ping"))

    await hostile.restart_node(VICTIM)  # a restart forgets what the node remembered in memory
    mallory = await hostile.connect_as("mallory")
    # Nodes answer only into the signer's (admin's) inbox: the test listens there to count the runs.
    observer = await hostile.connect_as("admin")
    replays = await gather_replies(mallory, captured.subject, captured.data, dict(captured.headers), count=3,
                                   listen=observer)
    victim_runs = 1 + sum(1 for m in replays if Reply.from_bytes(m.data).identity == VICTIM
                          and Reply.from_bytes(m.data).ok)

    # Whether or not the node refused the replay: every run it made has its own two records.
    def victim_records() -> list[str]:
        return sorted(r["phase"] for r in written(hostile, first.request_id) if r["identity"] == VICTIM)

    await until(lambda: victim_records() == ["decision"] * victim_runs + ["result"] * victim_runs, 15,
                f"{victim_runs} decision and result records of {VICTIM}")
