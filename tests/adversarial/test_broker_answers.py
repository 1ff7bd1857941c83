"""Hole 12, what permissions cannot stop: the broker's own answers, posted where the asker says.

nats-server 2.15 checks the reply subject of neither a JetStream API request nor a
stream publish against the asker's permissions (server/jetstream_api.go sends the
answer to whatever reply subject came with the request). Any role that may read a
stream (every user) can therefore have the server post its JSON answer onto a
node's audit subject, where the audit stream stores it, or onto a request
subject, where every node hears it. Permissions cannot refuse it; what holds is
that no nmc receiver takes an unsigned message for anything: the audit service
never writes it, nodes never run it, and the next genuine request is audited and
answered as ever. (A node's registry key: tests/adversarial/test_registry_wipe.py.)
"""

from __future__ import annotations

from nmc.audit.stream import STREAM
from nmc.protocol.subjects import all_subject, audit_subject
from tests.adversarial.brokerkit import published, stream_info
from tests.adversarial.kit import HostileFleet, until


async def test_an_api_answer_aimed_at_a_nodes_audit_subject_is_stored_but_never_written(hostile: HostileFleet):
    errors: list[str] = []
    mallory = await hostile.connect_as("mallory", errors=errors)
    admin = await hostile.connect_as("admin", errors=errors)
    victim = hostile.identities[0]
    before = (await stream_info(admin, STREAM, errors))["state"]["last_seq"]
    assert hostile.audit is not None
    refused_before = hostile.audit.counters.bad + hostile.audit.counters.refused
    written_before = len(hostile.audit_records())

    assert await published(mallory, f"$JS.API.STREAM.INFO.{STREAM}", b"", errors, reply=audit_subject("nmc", victim))

    # The broker did store its answer as a record of the victim's (what permissions cannot stop) ...
    after = (await stream_info(admin, STREAM, errors))["state"]["last_seq"]
    assert after == before + 1
    await hostile.audit_consumed(after)
    # ... and the audit service refused it: not a record signed by the node it names.
    assert hostile.audit.counters.bad + hostile.audit.counters.refused == refused_before + 1
    assert len(hostile.audit_records()) == written_before
    assert errors == []


async def test_an_api_answer_aimed_at_a_request_subject_runs_nothing(hostile: HostileFleet):
    errors: list[str] = []
    mallory = await hostile.connect_as("mallory", errors=errors)

    def count(what: str) -> int:
        return sum(getattr(node.pipeline.counters, what) for node in hostile.nodes)

    heard, passed = count("total"), count("passed")
    assert await published(mallory, f"$JS.API.STREAM.INFO.{STREAM}", b"", errors,
                           reply=all_subject("nmc", "rpcutil", "ping"))
    # Every node heard the broker's answer as a request and refused it (not a signed request) ...
    await until(lambda: count("total") == heard + len(hostile.nodes), 10, "every node to hear the answer")
    assert count("passed") == passed
    # ... and serves the next genuine request as ever.
    async with hostile.client("admin") as fc:
        result = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
    assert sorted(r.identity for r in result.results if r.ok) == sorted(hostile.identities)
    assert errors == []
