"""Holes 1-3: a captured request runs once, on the node it was meant for, and nowhere else.

1. A request addressed to chosen nodes (--limit, --batch, --dm flatfile/registry) used to be signed
   with only the discovery filter (often empty): node1, or anyone holding what node1 received,
   re-published it on the broadcast subject or node2's subject and every node ran it as the admin.
2. The replay cache lived only in memory: restart the node and the same request ran again.
3. Any signed caller could fill the replay cache with future-dated requests, evicting the admin's
   entry, and then replay the admin's request.

Every attack uses raw nats-py with a valid certificate: node1's own (a node sees what it is sent)
to capture, mallory's (a user the policy denies everything) to re-publish.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from nmc.transport.compat import synced_flush
from nmc.ops.config.files import load_config
from nmc.ops.daemon.serve import build_node
from nmc.protocol.envelope import Reply, Request
from nmc.protocol.status import Status
from nmc.protocol.subjects import all_subject, encode_token, node_subject
from tests.adversarial.kit import HostileFleet, until

PING = ("rpcutil", "ping")


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[HostileFleet]:
    """The hostile fleet with a small replay store (so a flood fits in a fast test) and a short clock skew."""
    fleet = HostileFleet(tmp_path / "fleet", node_cfg={
        "security.replay_capacity": "300", "security.replay_per_caller": "100", "security.clock_skew": "1"})
    try:
        yield await fleet.start()
    finally:
        await fleet.stop()


class Inbox:
    """Replies reaching one raw connection's inbox, parsed; a fresh reply subject per request, as clients use."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.base = nc.new_inbox()
        self.count = 0
        self.replies: list[Reply] = []

    async def start(self) -> Inbox:
        async def keep(msg: Msg) -> None:
            if msg.data:
                self.replies.append(Reply.from_bytes(msg.data))

        await self.nc.subscribe(f"{self.base}.*", cb=keep)
        await synced_flush(self.nc)
        return self

    @property
    def subject(self) -> str:
        """A reply subject not used before (the broker lets a node answer each reply subject once)."""
        self.count += 1
        return f"{self.base}.{self.count}"

    def to(self, request_id: str) -> list[Reply]:
        """The replies to one request."""
        return [r for r in self.replies if r.request_id == request_id]


async def capture_as_node1(fleet: HostileFleet) -> tuple[NATS, list[Msg]]:
    """Subscribe with node1's own certificate to node1's own subject: what a receiving node holds."""
    spy = await fleet.connect_as(fleet.identities[0])
    captured: list[Msg] = []

    async def keep(msg: Msg) -> None:
        captured.append(msg)

    await spy.subscribe(f"nmc.nmc.node.{encode_token(fleet.identities[0])}.>", cb=keep)
    await synced_flush(spy)
    return spy, captured


async def admin_pings_node1(fleet: HostileFleet) -> tuple[str, Msg]:
    """The admin pings node1 alone by direct addressing (what --limit/--batch/--dm do); returns id and the message."""
    spy, captured = await capture_as_node1(fleet)
    async with fleet.client("admin") as fc:
        result = await fc.call(*PING, {}, expect=[fleet.identities[0]], direct=True)
    assert [(r.identity, r.status) for r in result.results] == [(fleet.identities[0], Status.OK)]
    await until(lambda: captured, 5, "node1's spy to see the admin's request")
    await spy.close()
    return result.request_id, captured[0]


def records(fleet: HostileFleet, request_id: str, identity: str | None = None) -> list[dict[str, Any]]:
    """The audit service's records of one request (on one node)."""
    return [r for r in fleet.audit_records()
            if r.get("request_id") == request_id and (identity is None or r.get("identity") == identity)]


async def mallory_marker(fleet: HostileFleet, attacker: NATS, subject: str, expect: int) -> str:
    """Mallory's own request after the replays, on the same connection: once every node answered it and
    audited it, the replays published before it have been handled too."""
    inbox = await Inbox(attacker).start()
    async with fleet.client("mallory") as fc:
        req, body, headers = fc.build_request(*PING, {}, "")
    await attacker.publish(subject, body, headers=headers, reply=inbox.subject)
    await until(lambda: len(inbox.to(req.id)) >= expect, 10, "every node to answer mallory's marker request")
    await until(lambda: len(records(fleet, req.id)) >= expect, 10, "the marker's decision records")
    return req.id


# --- hole 1 ---------------------------------------------------------------------------------------


async def test_direct_request_replayed_on_other_subjects_runs_nowhere(hostile: HostileFleet):
    node1, node2, node3 = hostile.identities
    request_id, msg = await admin_pings_node1(hostile)
    attacker = await hostile.connect_as("mallory")
    # Replies go where the captured message said: the admin's inbox, watched here as the admin's client would.
    watched = await Inbox(await hostile.connect_as("admin")).start()
    for subject in (all_subject("nmc", *PING), node_subject("nmc", node2, *PING), node_subject("nmc", node3, *PING)):
        await attacker.publish(subject, msg.data, headers=msg.headers, reply=watched.subject)
    await mallory_marker(hostile, attacker, all_subject("nmc", *PING), expect=3)

    replies = watched.to(request_id)
    assert not [r for r in replies if r.identity != node1], "node2/node3 must not answer node1's request"
    assert all(r.status != Status.OK for r in replies), "node1 already ran it: at most a refusal"
    for other in (node2, node3):
        assert records(hostile, request_id, other) == [], f"{other} ran node1's request as the admin"
    assert len(records(hostile, request_id, node1)) == 2, "node1 ran it once: one decision, one result"


async def test_old_request_version_is_refused_with_its_reason(hostile: HostileFleet):
    """A v1 request (no place to say where it may run) is answered with a reason an old client can show."""
    node1 = hostile.identities[0]
    async with hostile.client("admin") as fc:
        req, body, _ = fc.build_request(*PING, {}, "")
        old = json.loads(body)
        old["protocol"] = "nmc.request.v1"
        old.pop("targets", None)
        old_body = json.dumps(old, separators=(",", ":")).encode()
        msg = await fc.nc.request(node_subject("nmc", node1, *PING), old_body,
                                  headers=hostile.signer("admin").headers(old_body), timeout=5)
    reply = Reply.from_bytes(msg.data)
    assert (reply.identity, reply.request_id, reply.status) == (node1, req.id, Status.INVALID_DATA)
    assert reply.message == ("nmc.request.v1 is no longer accepted: it does not say where it may run; "
                             "upgrade the client")
    assert records(hostile, req.id) == []


async def test_broadcast_request_on_a_node_subject_is_refused(hostile: HostileFleet):
    """A request without targets runs only where its filter routed it, never from a node subject."""
    node2 = hostile.identities[1]
    attacker = await hostile.connect_as("mallory")
    async with hostile.client("admin") as fc:
        req, body, headers = fc.build_request(*PING, {}, "")  # no targets: for broadcast subjects only
    watched = await Inbox(await hostile.connect_as("admin")).start()
    await attacker.publish(node_subject("nmc", node2, *PING), body, headers=headers, reply=watched.subject)
    await until(lambda: watched.to(req.id), 5, "node2's answer in the admin's inbox")
    reply = watched.to(req.id)[0]
    assert (reply.identity, reply.status) == (node2, Status.INVALID_DATA)
    assert "names no targets" in reply.message
    assert records(hostile, req.id) == []


# --- hole 2 ---------------------------------------------------------------------------------------


async def restart(fleet: HostileFleet, index: int, *, while_down: Any = None) -> None:
    """Stop node `index` (its daemon's clean stop), run `while_down()`, start it again from the same config."""
    old = fleet.nodes[index]
    await old.stop()
    if while_down is not None:
        while_down()
    node = await build_node(load_config(fleet.server_cfgs[index], kind="server", env={}))
    await node.start()
    fleet.nodes[index] = node


async def replay_to_node1(fleet: HostileFleet, msg: Msg) -> Reply:
    """Mallory re-publishes the captured message as it was (its reply subject is in the admin's inbox)."""
    attacker = await fleet.connect_as("mallory")
    watched = await Inbox(await fleet.connect_as("admin")).start()
    await attacker.publish(msg.subject, msg.data, headers=msg.headers, reply=watched.subject)
    request_id = json.loads(msg.data)["id"]
    await until(lambda: watched.to(request_id), 5, "node1's answer in the admin's inbox")
    return watched.to(request_id)[0]


def replay_file(fleet: HostileFleet) -> Path:
    return fleet.layout.node_dir(fleet.identities[0]) / "replay.log"


async def test_replay_after_restart_is_refused(hostile: HostileFleet):
    request_id, msg = await admin_pings_node1(hostile)
    await restart(hostile, 0)
    reply = await replay_to_node1(hostile, msg)
    assert (reply.status, reply.message) == (Status.INVALID_DATA, f"security: request id {request_id!r} was already seen")
    assert len(records(hostile, request_id)) == 2, "it ran once: one decision and one result record"


@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
async def test_replay_after_restart_with_lost_state_is_refused(small: HostileFleet, damage: str):
    request_id, msg = await admin_pings_node1(small)

    def lose_state() -> None:
        if damage == "deleted":
            replay_file(small).unlink(missing_ok=True)
        else:
            replay_file(small).write_bytes(b"\x00garbage\n")

    await restart(small, 0, while_down=lose_state)
    reply = await replay_to_node1(small, msg)
    assert reply.status == Status.INVALID_DATA
    assert reply.message.startswith("security: request issued before this node started")
    assert len(records(small, request_id)) == 2, "it ran once"
    # New requests run again once the clock-skew allowance (1 s here) has passed since the start.
    async with small.client("admin") as fc:
        async def answers() -> bool:
            result = await fc.call(*PING, {}, expect=[small.identities[0]], direct=True)
            return [r.status for r in result.results] == [Status.OK]

        await until(answers, 10, "node1 to run new requests again")


# --- hole 3 ---------------------------------------------------------------------------------------


async def test_flood_cannot_evict_the_admins_entry(small: HostileFleet):
    node1 = small.identities[0]
    request_id, msg = await admin_pings_node1(small)
    attacker = await small.connect_as("mallory")
    inbox = await Inbox(attacker).start()
    async with small.client("mallory") as fc:
        now = time.time()
        flood: list[tuple[str, bytes, dict[str, str]]] = []
        for i in range(600):
            kind = i % 3
            req, body, headers = fc.build_request(*PING, {}, "identity(nobody)" if kind == 1 else "", targets=[node1])
            if kind == 2:  # far in the future, so it would outlive every real entry
                req = Request(**{**req.__dict__, "time": now + 3000.0, "ttl": 3600.0})
                body = req.to_bytes()
                headers = small.signer("mallory").headers(body)
            flood.append((req.id, body, headers))
    # The subject node1's own requests come on (published with mallory's connection).
    for _, body, headers in flood:
        await attacker.publish(msg.subject, body, headers=headers, reply=inbox.subject)
    await synced_flush(attacker)
    answered = [i for i, (rid, _, _) in enumerate(flood) if i % 3 != 1]
    await until(lambda: all(inbox.to(flood[i][0]) for i in answered), 60, "node1 to answer the flood")

    # The admin's request, replayed after the flood: still remembered.
    reply = await replay_to_node1(small, msg)
    assert reply.status == Status.INVALID_DATA, reply.message
    assert reply.message == f"security: request id {request_id!r} was already seen"
    assert len(records(small, request_id)) == 2

    future = [inbox.to(flood[i][0])[0] for i in range(2, len(flood), 3)]
    assert {r.status for r in future} == {Status.INVALID_DATA}
    assert all("in the future" in r.message for r in future), future[0].message
    matched = [inbox.to(flood[i][0])[0] for i in range(0, len(flood), 3)]
    assert [r.status for r in matched] == [Status.ABORTED] * len(matched)
    denied = [r for r in matched if r.message.startswith("not authorized")]
    over = [r for r in matched if "per caller" in r.message]
    assert (len(denied), len(over)) == (100, 100), "the quota of 100 live ids per caller, then refusals"
    # The admin still gets through: mallory's quota is mallory's alone.
    async with small.client("admin") as fc:
        result = await fc.call(*PING, {}, expect=[node1], direct=True)
    assert [(r.identity, r.status) for r in result.results] == [(node1, Status.OK)]
