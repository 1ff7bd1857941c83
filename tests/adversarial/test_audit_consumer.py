"""Hole 5: the audit service's durable consumer belongs to the audit service alone.

Any user could send `$JS.API.CONSUMER.CREATE.NMC_AUDIT` (the consumer name in the
body, not in the subject, so the deny on `...CREATE.NMC_AUDIT.nmc-audit` did not
apply) and narrow the durable to a filter that matches nothing: records published
meanwhile never reached audit.jsonl, even after the filter was put back. Now no role
but `audit` may create, update, pause, reset, delete or fetch from it in any subject
form, and the audit service puts back a consumer that someone changed, from the record
after the last one it wrote.
"""

from __future__ import annotations

from typing import Any

from nmc.audit.stream import STREAM
from tests.adversarial.brokerkit import REFUSED, js_api
from tests.adversarial.kit import HostileFleet, until

DURABLE = "nmc-audit"
NOTHING = "nmc.audit.nothing"
INTRUDERS = ("mallory", "admin", "node9.example.net", "nmc-policy", "site1")


def _takeovers() -> list[tuple[str, Any]]:
    """Every subject form that creates, changes, stops or drains the durable, with a body that would do it."""
    config = {"ack_policy": "explicit", "deliver_policy": "all", "filter_subject": NOTHING}
    api = "$JS.API.CONSUMER"
    return [
        (f"{api}.CREATE.{STREAM}", {"stream_name": STREAM, "config": {**config, "name": DURABLE}}),
        (f"{api}.CREATE.{STREAM}.{DURABLE}", {"stream_name": STREAM,
                                              "config": {**config, "name": DURABLE, "durable_name": DURABLE}}),
        (f"{api}.CREATE.{STREAM}.{DURABLE}.{NOTHING}",
         {"stream_name": STREAM, "config": {**config, "name": DURABLE, "durable_name": DURABLE}}),
        (f"{api}.DURABLE.CREATE.{STREAM}.{DURABLE}", {"stream_name": STREAM,
                                                      "config": {**config, "durable_name": DURABLE}}),
        (f"{api}.PAUSE.{STREAM}.{DURABLE}", {"pause_until": "2999-01-01T00:00:00Z"}),
        (f"{api}.RESET.{STREAM}.{DURABLE}", {"seq": 1}),
        (f"{api}.DELETE.{STREAM}.{DURABLE}", b""),
        (f"{api}.MSG.NEXT.{STREAM}.{DURABLE}", {"batch": 10, "no_wait": True}),  # taking its records
    ]


async def _pinged(hostile: HostileFleet) -> str:
    async with hostile.client("admin") as fc:
        result = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
    assert sorted(r.identity for r in result.results if r.status == 0) == hostile.identities
    return result.request_id


async def _written(hostile: HostileFleet, request_id: str, within: float = 20.0) -> None:
    wanted = {(identity, phase) for identity in hostile.identities for phase in ("decision", "result")}

    def complete() -> bool:
        return {(r.get("identity"), r.get("phase")) for r in hostile.audit_records()
                if r.get("request_id") == request_id} >= wanted

    await until(complete, within, f"every decision and result of {request_id} in audit.jsonl")


async def test_no_other_role_can_take_over_the_audit_services_consumer(hostile: HostileFleet):
    assert hostile.audit is not None and hostile.audit.nc is not None
    js = hostile.audit.nc.jetstream()
    before = await js.consumer_info(STREAM, DURABLE)
    for name in INTRUDERS:
        errors: list[str] = []
        nc = await hostile.connect_as(name, errors=errors)
        for subject, body in _takeovers():
            answer = await js_api(nc, subject, body, errors=errors)
            assert answer is REFUSED, f"{name} may send {subject}: {answer}"
    after = await js.consumer_info(STREAM, DURABLE)
    assert after.config.filter_subject == before.config.filter_subject == "nmc.audit.>"
    assert after.created == before.created and not after.paused
    await _written(hostile, await _pinged(hostile))


async def test_the_audit_service_puts_back_a_changed_consumer_without_losing_a_record(hostile: HostileFleet):
    # Only the audit certificate itself may still change it (a stolen key, an operator's slip).
    errors: list[str] = []
    thief = await hostile.connect_as("nmc-audit", errors=errors)
    info = await js_api(thief, f"$JS.API.CONSUMER.INFO.{STREAM}.{DURABLE}", errors=errors)
    assert info is not None and "config" in info, info
    narrowed = {**info["config"], "filter_subject": NOTHING}
    answer = await js_api(thief, f"$JS.API.CONSUMER.CREATE.{STREAM}.{DURABLE}",
                          {"stream_name": STREAM, "config": narrowed}, errors=errors)
    assert answer is not None and answer.get("config", {}).get("filter_subject") == NOTHING, answer
    # Records published while it delivers nothing still reach the file once the service has put it back.
    request_id = await _pinged(hostile)
    await _written(hostile, request_id)
    assert hostile.audit is not None and hostile.audit.nc is not None
    restored = await hostile.audit.nc.jetstream().consumer_info(STREAM, DURABLE)
    assert restored.config.filter_subject == "nmc.audit.>" and restored.config.deliver_subject is None
    await _written(hostile, await _pinged(hostile))  # and it keeps writing
