"""jobs.policy grants job reads to people only, and only reads: every role attacked with raw nats-py.

The broker's configuration is regenerated with the widest policy there is (`allow * read *`)
and reloaded, as an operator would after editing jobs.policy. Then, with a valid certificate
of each role: a user reads every caller's jobs (what the policy says) but still writes none
and reads by nothing but subject; a node, the policy service, the audit service and the
operator read no job at all, because a policy grants people (role user) only; a narrower
policy gives exactly the callers it names.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.msg import Msg

from nmc.client.run import JobOptions, run_action
from nmc.ops.broker.authorization import TrustSources, secure_broker_settings
from nmc.protocol.jobs import job_subject
from tests.adversarial.brokerkit import published, refused
from tests.adversarial.kit import HostileFleet, until

NOT_PEOPLE = ("node1.example.net", "node9.example.net", "nmc-policy", "nmc-audit", "nmc-operator")


async def _job(hostile: HostileFleet, caller: str) -> str:
    async with hostile.client(caller) as fc:
        result = await run_action(fc, "rpcutil", "ping", job=JobOptions())
    assert result is not None and result.job_id
    return result.job_id


async def _grant(hostile: HostileFleet, policy: str) -> None:
    policies = hostile.layout.policy_dir / "policies"
    (policies / "jobs.policy").write_text(policy)
    assert hostile.broker is not None
    settings, _ = secure_broker_settings(hostile.broker.settings,
                                         TrustSources(ca_dir=hostile.layout.ca_dir, policy_dir=policies))
    await asyncio.to_thread(hostile.broker.reload, settings)


async def _direct_get(hostile: HostileFleet, name: str, subject: str) -> bytes | None:
    """The stored message's body as `name` reads it by direct get, or None when the broker refuses the request."""
    errors: list[str] = []
    nc = await hostile.connect_as(name, errors=errors)
    answers: list[Msg] = []

    async def keep(msg: Msg) -> None:
        answers.append(msg)

    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=keep)
    api = f"$JS.API.DIRECT.GET.NMC_JOBS.{subject}"
    if not await published(nc, api, b"", errors, reply=inbox):
        assert refused(errors, api)
        return None
    await until(lambda: bool(answers), 5, f"{name}'s direct get of {subject}")
    assert not (answers[0].headers or {}).get("Status"), answers[0].headers
    return answers[0].data


async def test_the_widest_policy_lets_people_read_and_nothing_else(hostile: HostileFleet) -> None:
    admins, anns = await _job(hostile, "admin"), await _job(hostile, "ann")
    await _grant(hostile, "policy default deny\nallow   *   read   *\n")
    for caller, job_id in (("admin", admins), ("ann", anns)):
        start = await _direct_get(hostile, "mallory", job_subject("nmc", caller, job_id, "start"))
        assert start is not None and json.loads(start)["id"] == job_id
    for name in NOT_PEOPLE:
        assert await _direct_get(hostile, name, job_subject("nmc", "admin", admins, "start")) is None, name

    # The grant is a read by subject, nothing more: no forged record, no read by sequence or MSG.GET.
    errors: list[str] = []
    mallory = await hostile.connect_as("mallory", errors=errors)
    for subject, body in ((job_subject("nmc", "admin", admins, "end"), b"{}"),
                          ("$JS.API.DIRECT.GET.NMC_JOBS", json.dumps({"seq": 1}).encode()),
                          ("$JS.API.STREAM.MSG.GET.NMC_JOBS", json.dumps({"seq": 1}).encode()),
                          ("$JS.API.STREAM.PURGE.NMC_JOBS", b"")):
        assert not await published(mallory, subject, body, errors, reply=mallory.new_inbox()), subject


async def test_a_narrow_policy_gives_exactly_the_callers_it_names(hostile: HostileFleet) -> None:
    admins, anns = await _job(hostile, "admin"), await _job(hostile, "ann")
    await _grant(hostile, "policy default deny\nallow   cert=mallory   read   caller=admin\n")
    assert await _direct_get(hostile, "mallory", job_subject("nmc", "admin", admins, "start")) is not None
    assert await _direct_get(hostile, "mallory", job_subject("nmc", "ann", anns, "start")) is None
    assert await _direct_get(hostile, "admin", job_subject("nmc", "ann", anns, "start")) is None  # not named
