"""Every node is an ADR-32 `nmc-node` service: its $SRV answers pass the jsm.go schemas and say true things.

Raw nats-py requests on a real nats-server, replies validated with `jsonschema`
against the schemas vendored in tests/interop/micro-schemas (from nats-io/jsm.go).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from jsonschema import Draft7Validator

from nmc import __version__
from nmc.protocol.filter import combine
from nmc.protocol.status import Status
from nmc.protocol.subjects import encode_token
from nmc.services.node import SERVICE_NAME

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "tests" / "interop" / "micro-schemas"
VERBS = {"PING": "ping_response", "INFO": "info_response", "STATS": "stats_response"}
# A window for "nobody else answers": replies on loopback arrive in well under a millisecond.
QUIET = 1.0


def _validator(kind: str) -> Draft7Validator:
    schema = json.loads((SCHEMA_DIR / f"{kind}.json").read_text())
    Draft7Validator.check_schema(schema)
    # FORMAT_CHECKER checks `date-time` when rfc3339-validator is installed; `started` is also parsed below.
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


VALIDATORS = {verb: _validator(kind) for verb, kind in VERBS.items()}


def assert_valid(verb: str, reply: dict[str, Any]) -> None:
    """The reply passes the jsm.go schema for its verb (every violation is listed on failure)."""
    errors = sorted(VALIDATORS[verb].iter_errors(reply), key=lambda e: list(e.path))
    assert not errors, f"$SRV.{verb} reply fails its schema:\n" + "\n".join(
        f"  {'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors) + f"\nreply: {reply}"
    if verb == "STATS":
        started = datetime.fromisoformat(reply["started"])
        assert started.tzinfo is not None, reply["started"]


async def gather(nc: nats.NATS, subject: str, *, want: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Publish an empty request on `subject`; collect JSON replies until `want` arrived or `timeout` passed."""
    inbox = nc.new_inbox()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_reply(msg: Any) -> None:
        await queue.put(msg.data)

    sub = await nc.subscribe(inbox, cb=on_reply)
    try:
        await nc.publish(subject, b"", reply=inbox)
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(replies) < want and (left := deadline - time.monotonic()) > 0:
            try:
                replies.append(json.loads(await asyncio.wait_for(queue.get(), left)))
            except asyncio.TimeoutError:
                break
        return replies
    finally:
        await sub.unsubscribe()


async def exactly(nc: nats.NATS, subject: str, n: int) -> list[dict[str, Any]]:
    """The replies to `subject`, asserting that n arrive and no (n+1)th within the quiet window."""
    replies = await gather(nc, subject, want=n + 1, timeout=QUIET)
    assert len(replies) == n, f"{subject}: expected {n} replies, got {len(replies)}: {[r.get('id') for r in replies]}"
    return replies


async def stats_of(nc: nats.NATS, service_id: str) -> dict[str, Any]:
    """One instance's STATS endpoints keyed by name (the reply is schema-checked)."""
    [reply] = await gather(nc, f"$SRV.STATS.{SERVICE_NAME}.{service_id}", want=1)
    assert_valid("STATS", reply)
    assert reply["id"] == service_id
    return {e["name"]: e for e in reply["endpoints"]}


async def wait_for_stats(nc: nats.NATS, service_id: str, endpoint: str, ok: Any, timeout: float = 3.0) -> dict[str, Any]:
    """Poll STATS until `ok(endpoint stats)` holds (the handler's bookkeeping ends just after it replies)."""
    deadline = time.monotonic() + timeout
    while True:
        ep = (await stats_of(nc, service_id))[endpoint]
        if ok(ep) or time.monotonic() > deadline:
            return ep
        await asyncio.sleep(0.02)


@pytest.fixture
async def raw_nc(fleet):
    nc = await nats.connect(fleet.url)
    yield nc
    await nc.drain()


async def three(fleet):
    return [
        await fleet.add("web1.example.com", {"country": "us", "role": "web", "rank": 1}, ["apache", "base"]),
        await fleet.add("db-2", {"country": "de", "role": "db", "rank": 2}, ["mysql"]),
        await fleet.add("cache3", {"country": "uk"}),
    ]


async def test_every_control_subject_answers_with_schema_valid_replies(fleet, raw_nc):
    nodes = await three(fleet)
    ids = {n.service.id: n for n in nodes}
    assert len(ids) == 3, "each node must be its own service instance"

    subjects = [(verb, f"$SRV.{verb}", 3) for verb in VERBS]
    subjects += [(verb, f"$SRV.{verb}.{SERVICE_NAME}", 3) for verb in VERBS]
    subjects += [(verb, f"$SRV.{verb}.{SERVICE_NAME}.{sid}", 1) for verb in VERBS for sid in ids]
    # Every request at once: the quiet windows overlap, so the whole check takes one window.
    answers = await asyncio.gather(*(exactly(raw_nc, subject, n) for _, subject, n in subjects))

    for (verb, subject, n), replies in zip(subjects, answers):
        for reply in replies:
            assert_valid(verb, reply)
            assert reply["name"] == SERVICE_NAME and reply["version"] == __version__
            node = ids[reply["id"]]
            assert reply["metadata"] == {"identity": node.identity, "collective": "nmc", "version": __version__}
        got = [r["id"] for r in replies]
        assert len(set(got)) == len(got), f"{subject}: an instance answered twice: {got}"
        if n == 1:
            assert got == [subject.rsplit(".", 1)[1]], f"{subject} was answered by another instance"
        else:
            assert set(got) == set(ids), subject


async def test_info_lists_exactly_the_subjects_each_node_listens_on(fleet, raw_nc):
    nodes = await three(fleet)
    replies = await exactly(raw_nc, f"$SRV.INFO.{SERVICE_NAME}", 3)
    by_id = {r["id"]: r for r in replies}
    for node in nodes:
        info = by_id[node.service.id]
        assert_valid("INFO", info)
        assert isinstance(info["description"], str) and node.identity in info["description"]
        names = [e["name"] for e in info["endpoints"]]
        assert len(set(names)) == len(names), f"endpoint names must be unique: {names}"
        subjects = {e["subject"] for e in info["endpoints"]}
        # What INFO says is what the service subscribed ...
        assert subjects == {ep.subscription.subject for ep in node.service.endpoints}
        # ... and that is the node's routing subjects (PROTOCOL.md section 1), no queue groups.
        expected = {f"nmc.nmc.node.{encode_token(node.identity)}.>"}
        expected |= {f"nmc.nmc.all.{cls.name}.*" for cls in node.agent_classes}
        expected |= {f"nmc.nmc.class.{c}.>" for c in node.facts.classes}
        expected |= {f"nmc.nmc.fact.{k}.{v}.>" for k, v in node.facts.facts.items()}
        assert subjects == expected, node.identity
        assert not any("queue_group" in e for e in info["endpoints"]), "every node must answer a broadcast"
    web = by_id[nodes[0].service.id]
    assert "nmc.nmc.node.web1%2Eexample%2Ecom.>" in {e["subject"] for e in web["endpoints"]}
    node_ep = next(e for e in web["endpoints"] if e["name"] == "node")
    assert node_ep["metadata"] == {"route": "node", "identity": "web1.example.com"}


async def test_info_follows_fact_changes(fleet, raw_nc):
    from nmc.services.facts import NodeFacts

    node = (await three(fleet))[2]
    await node.update_facts(NodeFacts(facts={"country": "fr"}, classes=("edge",)))
    [info] = await gather(raw_nc, f"$SRV.INFO.{SERVICE_NAME}.{node.service.id}", want=1)
    assert_valid("INFO", info)
    subjects = {e["subject"] for e in info["endpoints"]}
    assert {"nmc.nmc.fact.country.fr.>", "nmc.nmc.class.edge.>"} <= subjects
    assert "nmc.nmc.fact.country.uk.>" not in subjects


async def test_stats_count_real_requests_and_error_answers(fleet, raw_nc):
    nodes = await three(fleet)
    target, others = nodes[1], [nodes[0], nodes[2]]
    sid = target.service.id
    before = await stats_of(raw_nc, sid)
    assert before["node"]["num_requests"] == 0 and before["node"]["num_errors"] == 0
    assert before["node"]["last_error"] == ""

    only_target = combine(identities=[target.identity])
    async with fleet.client() as fc:
        ok = await fc.call("rpcutil", "ping", {}, filter_expr=only_target, expect=[target.identity])
        assert [(r.identity, r.ok) for r in ok.results] == [(target.identity, True)]
        after_ok = await wait_for_stats(raw_nc, sid, "node", lambda e: e["num_requests"] == 1)
        assert (after_ok["num_requests"], after_ok["num_errors"]) == (1, 0)
        assert after_ok["processing_time"] > 0 and after_ok["average_processing_time"] == after_ok["processing_time"]

        bad = await fc.call("nosuch", "x", {}, filter_expr=only_target, expect=[target.identity])
        assert [(r.identity, r.status) for r in bad.results] == [(target.identity, Status.UNKNOWN_ACTION)]
        after_err = await wait_for_stats(raw_nc, sid, "node", lambda e: e["num_errors"] == 1)
    assert (after_err["num_requests"], after_err["num_errors"]) == (2, 1)
    assert "nosuch" in after_err["last_error"], after_err
    assert after_err["average_processing_time"] == after_err["processing_time"] // 2

    # The identity filter was routed by the broker: nobody else counted anything.
    for other in others:
        stats = await stats_of(raw_nc, other.service.id)
        assert all(stats[ep.name]["num_requests"] == 0 for ep in other.service.endpoints), other.identity
