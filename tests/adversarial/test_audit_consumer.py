"""Holes 5 and 12: nobody, the audit role included, has a consumer of NMC_AUDIT, and the trail is written regardless.

Hole 5: any user could send `$JS.API.CONSUMER.CREATE.NMC_AUDIT` (the consumer name in the
body) and narrow the audit service's durable to a filter that matches nothing, so
records published meanwhile never reached audit.jsonl. Hole 12: nats-server checks
neither a push consumer's deliver subject nor a pull request's reply subject, so whoever
may create or fetch from a consumer can have stored records delivered onto any subject.
Now no role may create, change or fetch from a consumer of the stream in any subject
form, push or pull, and the audit service needs none: it reads by sequence and keeps
its own position (nmc.audit.service), so records published while every certificate of
the fleet tries still reach the file, each once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nmc.audit.stream import STREAM
from nmc.security.names import inbox_prefix
from tests.adversarial.brokerkit import REFUSED, js_api, stream_info
from tests.adversarial.kit import HostileFleet, until

# Every certificate the fleet has: users, a running node and a stolen one, the three services, a site's leaf.
EVERYONE = ("admin", "mallory", "node1.example.net", "node9.example.net", "nmc-policy", "nmc-audit", "nmc-operator",
            "site1")
NAMES = ("nmc-audit", "spy")  # the durable the audit service used to own, and any other
ELSEWHERE = (f"{inbox_prefix('admin')}.stolen", "nmc.nmc.all.rpcutil.ping")


def _consumer_requests(name: str) -> list[tuple[str, Any]]:
    """Every subject form that makes a consumer of the audit stream (pull, and push to `ELSEWHERE`) or fetches."""
    kinds = [{"ack_policy": "explicit", "deliver_policy": "all"}]
    kinds += [{"ack_policy": "none", "deliver_policy": "all", "deliver_subject": where} for where in ELSEWHERE]
    api = "$JS.API.CONSUMER"
    requests: list[tuple[str, Any]] = []
    for config in kinds:
        requests += [
            (f"{api}.CREATE.{STREAM}", {"stream_name": STREAM, "config": {**config, "name": name}}),
            (f"{api}.CREATE.{STREAM}.{name}", {"stream_name": STREAM, "config": {**config, "name": name}}),
            (f"{api}.CREATE.{STREAM}.{name}.nmc.audit.>",
             {"stream_name": STREAM, "config": {**config, "name": name, "filter_subject": "nmc.audit.>"}}),
            (f"{api}.DURABLE.CREATE.{STREAM}.{name}",
             {"stream_name": STREAM, "config": {**config, "durable_name": name}}),
        ]
    return requests + [
        (f"{api}.MSG.NEXT.{STREAM}.{name}", {"batch": 10, "no_wait": True}),
        (f"{api}.INFO.{STREAM}.{name}", b""),
        (f"{api}.DELETE.{STREAM}.{name}", b""),
        (f"$JS.API.DIRECT.GET.{STREAM}", {"seq": 1}),
    ]


async def _pinged(hostile: HostileFleet) -> str:
    async with hostile.client("admin") as fc:
        result = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
    assert sorted(r.identity for r in result.results if r.status == 0) == hostile.identities
    return result.request_id


async def _written(hostile: HostileFleet, request_ids: list[str], within: float = 20.0) -> None:
    wanted = {(rid, identity, phase) for rid in request_ids for identity in hostile.identities
              for phase in ("decision", "result")}

    def complete() -> bool:
        return {(r.get("request_id"), r.get("identity"), r.get("phase")) for r in hostile.audit_records()} >= wanted

    await until(complete, within, f"every decision and result of {request_ids} in audit.jsonl")
    errors: list[str] = []
    admin = await hostile.connect_as("admin", errors=errors)
    await hostile.audit_consumed((await stream_info(admin, STREAM, errors))["state"]["last_seq"])  # counted, saved
    counts: dict[tuple[Any, ...], int] = {}
    for r in hostile.audit_records():
        key = (r.get("request_id"), r.get("identity"), r.get("phase"))
        counts[key] = counts.get(key, 0) + 1
    assert {counts[key] for key in wanted} == {1}, "a record written more than once"


async def test_no_role_can_make_or_use_a_consumer_of_the_audit_stream(hostile: HostileFleet):
    errors: list[str] = []
    admin = await hostile.connect_as("admin", errors=errors)
    assert (await stream_info(admin, STREAM, errors))["state"]["consumer_count"] == 0

    async def attack(name: str) -> None:
        own: list[str] = []
        nc = await hostile.connect_as(name, errors=own)
        for consumer in NAMES:
            for subject, body in _consumer_requests(consumer):
                answer = await js_api(nc, subject, body, errors=own)
                assert answer is REFUSED, f"{name} may send {subject}: {answer}"

    # Records are published while every certificate tries, and reach the file all the same.
    pings = asyncio.ensure_future(asyncio.gather(*(_pinged(hostile) for _ in range(3))))
    await asyncio.gather(*(attack(name) for name in EVERYONE))
    request_ids = list(await pings)
    request_ids.append(await _pinged(hostile))
    await _written(hostile, request_ids)
    assert (await stream_info(admin, STREAM, errors))["state"]["consumer_count"] == 0
    assert hostile.audit is not None and hostile.audit.counters.written >= 8 * len(hostile.identities)


async def test_the_audit_service_reads_with_no_consumer_and_resumes_at_its_position(hostile: HostileFleet):
    assert hostile.audit is not None
    first = await _pinged(hostile)
    await _written(hostile, [first])
    await hostile.audit.stop()
    # While it is down the nodes keep writing to the stream.
    missed = [await _pinged(hostile) for _ in range(2)]
    hostile.audit = restarted = type(hostile.audit)(hostile.audit.settings, hostile.audit.verifier)
    await restarted.start()
    await _written(hostile, [first, *missed])
    # It went on from its saved position: nothing before it was read twice.
    assert restarted.counters.duplicates == 0 and restarted.counters.written == 4 * len(hostile.identities)
    errors: list[str] = []
    admin = await hostile.connect_as("admin", errors=errors)
    assert (await stream_info(admin, STREAM, errors))["state"]["consumer_count"] == 0
