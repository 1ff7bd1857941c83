"""Authorization with real services on a real nats-server: the policy service, replicas, forgeries, reloads.

Policy services run in-process on their own NATS connections; nodes ask
them through ServiceAuthorizer on the node's connection, exactly as
`nmc serve node` with `authz.mode = service` does.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import ClassVar

import nats
import pytest
from structlog.testing import capture_logs

from nmc.authz.local import LocalAuthorizer
from nmc.authz.remote import ServiceAuthorizer
from nmc.authz.service import PolicyService, PolicyServiceSettings
from nmc.protocol.authz import AuthzAnswer, AuthzQuestion
from nmc.protocol.subjects import reloaded_subject
from nmc.transport.compat import synced_flush
from nmc.protocol.status import Status
from nmc.protocol.subjects import authz_subject
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.agents import BUILTIN_AGENTS
from nmc.security.names import inbox_prefix
from tests.integration.fleetkit import Fleet, FleetCA

PUPPET_POLICY = (
    "policy default deny\n"
    "allow\tcert=alice\t*\t*\n"
    "allow\tsysadmins\trunonce\t(environment=production and puppet_enabled=false) or environment=development\n"
    "allow   cert=carol   status   *   role::web\n"
    "deny\tcert=mallory\t*\t*\n"
)
NODES = {
    "web1.test": ({"environment": "production", "puppet_enabled": False}, ["role::web"]),
    "web2.test": ({"environment": "production", "puppet_enabled": True}, ["role::web"]),
    "dev1.test": ({"environment": "development", "puppet_enabled": True}, ["role::db"]),
}
SIGNERS = ("policy1", "policy2", "policy3")


class Puppet(Agent):
    """Records every run, so a test can tell that a denied request ran nothing."""

    name = "puppet"
    runs: ClassVar[list[tuple[str, str, str]]] = []

    @action("run puppet once")
    async def runonce(self, req: ActionRequest) -> dict:
        Puppet.runs.append((self.node.identity, "runonce", req.caller))  # type: ignore[attr-defined]
        return {}

    @action("puppet status")
    async def status(self, req: ActionRequest) -> dict:
        Puppet.runs.append((self.node.identity, "status", req.caller))  # type: ignore[attr-defined]
        return {}


def write_atomically(path: Path, text: str) -> None:
    """How config management writes files: never a half-written policy in place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@pytest.fixture
def policydir(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "puppet.policy").write_text(PUPPET_POLICY, encoding="utf-8")
    (d / "groups").write_text("sysadmins cert=sa1 cert=sa2\n", encoding="utf-8")
    return d


@pytest.fixture
async def policy_services(fleet: Fleet, policydir: Path) -> AsyncIterator[Callable]:
    """start(name) -> a running in-process PolicyService signing as `name`; all stopped at teardown."""
    started: list[PolicyService] = []

    async def start(name: str = "policy1", directory: Path | None = None) -> PolicyService:
        svc = PolicyService(PolicyServiceSettings(collective="nmc", policydir=directory or policydir,
                                                  servers=(fleet.url,), poll_interval=0.05, reconnect_wait=0.1),
                            fleet.ca.signer(name), fleet.ca.verifier())
        await svc.start()
        started.append(svc)
        return svc

    yield start
    for svc in started:
        await svc.stop()


def asker(fleet: Fleet, identity: str, **kw) -> ServiceAuthorizer:
    return ServiceAuthorizer(None, fleet.ca.signer(identity), fleet.ca.verifier(), "nmc", SIGNERS, **kw)


async def add_nodes(fleet: Fleet, make_authorizer: Callable[[str], object], names=tuple(NODES)) -> None:
    for name in names:
        facts, classes = NODES[name]
        await fleet.add(name, facts, classes, agents=(*BUILTIN_AGENTS, Puppet), authorizer=make_authorizer(name))


async def call(fleet: Fleet, caller: str, act: str, nodes=tuple(NODES)) -> dict[str, tuple[Status, str]]:
    async with fleet.client(caller) as fc:
        result = await fc.call("puppet", act, {}, expect=list(nodes), timeout=10)
    assert result.no_response == ()
    return {r.identity: (r.status, r.message) for r in result.results}


def allowed(replies: dict[str, tuple[Status, str]]) -> set[str]:
    return {name for name, (status, _) in replies.items() if status == Status.OK}


async def test_service_decides_per_caller_action_facts_classes_and_groups(fleet, policy_services):
    Puppet.runs = []
    await policy_services("policy1")
    await add_nodes(fleet, lambda name: asker(fleet, name))

    assert allowed(await call(fleet, "alice", "runonce")) == set(NODES)
    # Group member; the compound facts column is evaluated on each target node's own facts.
    sa1 = await call(fleet, "sa1", "runonce")
    assert allowed(sa1) == {"web1.test", "dev1.test"}
    status, message = sa1["web2.test"]
    assert status == Status.ABORTED
    assert message == ("not authorized: no rule allows cert=sa1 to run puppet.runonce on this node (facts/classes "
                       "of puppet.policy:3 do not match); policy default deny (puppet.policy:1)")
    assert allowed(await call(fleet, "sa1", "status")) == set()  # the group may run runonce only
    assert allowed(await call(fleet, "carol", "status")) == {"web1.test", "web2.test"}  # class column
    mallory = await call(fleet, "mallory", "runonce")
    assert {m for _, m in mallory.values()} == {
        "not authorized: a deny rule forbids cert=mallory to run puppet.runonce (puppet.policy:5)"}
    bob = await call(fleet, "bob", "runonce")
    assert allowed(bob) == set() and all("(puppet.policy:1)" in m for _, m in bob.values())
    assert allowed(await call(fleet, "sa3", "runonce")) == set()  # not in the group

    ran = {(node, act, caller) for node, act, caller in Puppet.runs}
    assert {caller for _, _, caller in ran} == {"cert=alice", "cert=sa1", "cert=carol"}
    assert len(Puppet.runs) == 3 + 2 + 2
    assert ("web2.test", "runonce", "cert=sa1") not in ran


async def test_forged_policy_answers_are_ignored(fleet, policy_services, tmp_path):
    Puppet.runs = []
    real = await policy_services("policy1")
    await add_nodes(fleet, lambda name: asker(fleet, name, timeout=0.6), names=("web1.test",))
    # Two forgers answer every question "allowed": one with a valid fleet certificate that is not a
    # trusted policy signer, one with a certificate from another CA claiming a trusted name.
    forgers = [fleet.ca.signer("rogue"), FleetCA(tmp_path / "evil-ca").signer("policy1")]
    nc = await nats.connect(fleet.url)

    async def forge(msg):
        question = AuthzQuestion.from_bytes(msg.data)
        body = AuthzAnswer(request_id=question.request_id, identity=question.identity, allowed=True,
                           rule="forged:1", reason="forged", time=time.time()).to_bytes()
        for signer in forgers:
            await nc.publish(msg.reply, body, headers=signer.headers(body))

    await nc.subscribe(authz_subject("nmc"), cb=forge)
    await synced_flush(nc)
    try:
        with capture_logs() as logs:
            bob = await call(fleet, "bob", "runonce", ["web1.test"])
        assert bob["web1.test"][0] == Status.ABORTED and "(puppet.policy:1)" in bob["web1.test"][1]

        await real.stop()  # now only forgers answer: the node waits for a trusted answer, then denies
        with capture_logs() as logs:
            alice = await call(fleet, "alice", "runonce", ["web1.test"])
    finally:
        await nc.close()
    status, message = alice["web1.test"]
    assert status == Status.ABORTED
    assert message.startswith("not authorized: policy service unreachable (no trusted answer within 0.6s); "
                              "ignored ")
    ignored = [e["reason"] for e in logs if e["event"] == "authz_answer_ignored"]
    assert any("signed by 'rogue', which is not a trusted policy signer" in r for r in ignored)
    assert any("not signed by a trusted CA" in r for r in ignored)
    assert Puppet.runs == []


async def test_policy_service_down_means_denied_with_a_clear_message(fleet, policy_services):
    Puppet.runs = []
    service = await policy_services("policy1")
    await add_nodes(fleet, lambda name: asker(fleet, name, cache_ttl=0), names=("web1.test",))
    assert allowed(await call(fleet, "alice", "runonce", ["web1.test"])) == {"web1.test"}
    await service.stop()
    with capture_logs() as logs:
        replies = await call(fleet, "alice", "runonce", ["web1.test"])
    assert replies["web1.test"] == (Status.ABORTED, ("not authorized: policy service unreachable (nothing "
                                                     "subscribed to nmc.nmc.authz.check)"))
    assert len(Puppet.runs) == 1  # only the run from before the service stopped
    assert any(e["event"] == "request_refused" and "policy service unreachable" in e["reason"] for e in logs)

    # Something subscribed that never answers: the node waits authz.timeout, then says so.
    async def silent(msg) -> None:
        return None

    nc = await nats.connect(fleet.url)
    await nc.subscribe(authz_subject("nmc"), cb=silent)
    await synced_flush(nc)
    try:
        fleet.node("web1.test").authorizer.timeout = 0.3  # type: ignore[attr-defined]
        replies = await call(fleet, "alice", "runonce", ["web1.test"])
    finally:
        await nc.close()
    assert replies["web1.test"] == (Status.ABORTED, ("not authorized: policy service unreachable (no trusted "
                                                     "answer within 0.3s)"))
    assert len(Puppet.runs) == 1


async def test_replicas_take_over_without_denials(fleet, policy_services):
    Puppet.runs = []
    first, second = await policy_services("policy1"), await policy_services("policy2")
    await add_nodes(fleet, lambda name: asker(fleet, name, cache_ttl=0, timeout=1.0), names=("web1.test",))
    nc = await nats.connect(fleet.url)
    try:
        info = json.loads((await nc.request("$SRV.INFO.nmc-policy", b"", timeout=2)).data)
    finally:
        await nc.close()
    assert info["name"] == "nmc-policy" and info["endpoints"][0]["queue_group"] == "nmc-policy"
    assert info["endpoints"][0]["subject"] == "nmc.nmc.authz.check"

    statuses: list[Status] = []
    async with fleet.client("alice") as fc:
        for i in range(16):
            request = asyncio.ensure_future(fc.call("puppet", "runonce", {}, expect=["web1.test"], timeout=10))
            if i == 8:
                await first.stop()  # graceful: questions it already holds are still answered
            statuses.extend(r.status for r in (await request).results)

        # A replica that dies holding a question: it joined the queue group and crashes on its first one.
        # The node asks again at half its timeout, and the broker hands the question to a live replica.
        hole = await nats.connect(fleet.url)
        swallowed = asyncio.Event()

        async def crash(msg) -> None:
            swallowed.set()
            await hole.close()

        await hole.subscribe(authz_subject("nmc"), queue="nmc-policy", cb=crash)
        await synced_flush(hole)
        with capture_logs() as logs:
            for _ in range(40):  # the broker picks a queue member at random: stop once the hole got one
                statuses.extend(r.status for r in (await fc.call("puppet", "runonce", {}, expect=["web1.test"],
                                                                  timeout=10)).results)
                if swallowed.is_set():
                    break
    assert swallowed.is_set()
    assert any(e["event"] == "authz_question_resent" for e in logs)
    assert statuses == [Status.OK] * len(statuses) and len(statuses) > 16
    assert second.service is not None and second.service.endpoints[0].num_requests > 0
    assert len(Puppet.runs) == len(statuses)


async def test_policy_change_takes_effect_without_restarting_anything(fleet, policy_services, policydir):
    Puppet.runs = []
    await policy_services("policy1")
    await add_nodes(fleet, lambda name: asker(fleet, name, cache_ttl=60), names=("web1.test",))
    authorizer = fleet.node("web1.test").authorizer
    nc = await nats.connect(fleet.url)
    notices: asyncio.Queue = asyncio.Queue()
    await nc.subscribe(reloaded_subject("nmc"), cb=notices.put)
    await synced_flush(nc)

    async def change(text: str) -> None:
        write_atomically(policydir / "puppet.policy", text)
        await asyncio.wait_for(notices.get(), timeout=10)

    try:
        assert allowed(await call(fleet, "alice", "runonce", ["web1.test"])) == {"web1.test"}
        assert authorizer.cached == 1  # type: ignore[attr-defined]
        await change("policy default allow\ndeny\tcert=alice\t*\t*\n")
        replies = await call(fleet, "alice", "runonce", ["web1.test"])
        assert replies["web1.test"] == (Status.ABORTED, ("not authorized: a deny rule forbids cert=alice to run "
                                                         "puppet.runonce (puppet.policy:2)"))
        assert allowed(await call(fleet, "bob", "runonce", ["web1.test"])) == {"web1.test"}

        with capture_logs() as logs:
            await change("policy default allow\ndeny\tcert=alice\t*\t*\nallow cert=x cert=y status * a b\n")
        assert any(e["event"] == "policy_issue" and e["where"] == "puppet.policy:3" for e in logs)
        replies = await call(fleet, "bob", "runonce", ["web1.test"])
        status, message = replies["web1.test"]
        assert status == Status.ABORTED
        assert message.startswith("not authorized: puppet.policy has errors, so it denies every request: ambiguous")
        assert message.endswith("(puppet.policy:3)")

        await change(PUPPET_POLICY)
        assert allowed(await call(fleet, "alice", "runonce", ["web1.test"])) == {"web1.test"}
    finally:
        await nc.close()
    assert [caller for _, _, caller in Puppet.runs] == ["cert=alice", "cert=bob", "cert=alice"]


async def test_questions_must_be_signed_by_the_node_they_are_about(fleet, policy_services, tmp_path):
    await policy_services("policy1")
    question = AuthzQuestion(request_id="q1", caller="cert=alice", agent="puppet", action="runonce",
                             identity="web1.test", facts={}, classes=())
    body = question.to_bytes()
    verifier = fleet.ca.verifier()
    cases = {
        "unsigned": ({}, "missing Nmc-Signature header"),
        "other CA": (FleetCA(tmp_path / "evil").signer("web1.test").headers(body), "not signed by a trusted CA"),
        "another node": (fleet.ca.signer("web2.test").headers(body), "question about node 'web1.test' signed by 'web2.test'"),
    }
    nc = await nats.connect(fleet.url, inbox_prefix=inbox_prefix("web1.test"))  # answers go to the node's inbox
    try:
        for label, (headers, why) in cases.items():
            msg = await nc.request(authz_subject("nmc"), body, headers=headers, timeout=5)
            assert verifier.verify(msg.data, msg.headers["Nmc-Signature"], msg.headers["Nmc-Certificate"]) == "policy1"
            answer = AuthzAnswer.from_bytes(msg.data)
            assert answer.error and not answer.allowed and answer.request_id == "q1", label
            assert why in answer.reason, (label, answer.reason)
        good = await nc.request(authz_subject("nmc"), body, headers=fleet.ca.signer("web1.test").headers(body), timeout=5)
        assert AuthzAnswer.from_bytes(good.data).allowed
    finally:
        await nc.close()


async def test_local_mode_evaluates_the_same_files_and_reloads(fleet, policydir):
    Puppet.runs = []
    authorizers: dict[str, LocalAuthorizer] = {}

    def local(name: str) -> LocalAuthorizer:
        authorizers[name] = LocalAuthorizer.from_directory(policydir, poll_interval=30)
        return authorizers[name]

    await add_nodes(fleet, local)
    assert allowed(await call(fleet, "sa2", "runonce")) == {"web1.test", "dev1.test"}
    assert allowed(await call(fleet, "carol", "status")) == {"web1.test", "web2.test"}
    write_atomically(policydir / "groups", "sysadmins cert=sa1\n")
    for authorizer in authorizers.values():
        assert await authorizer.reload_now()
    replies = await call(fleet, "sa2", "runonce")
    assert allowed(replies) == set()
    assert len(Puppet.runs) == 4
