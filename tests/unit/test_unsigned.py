"""Unsigned read-only queries: the allowlist, its settings, and the pipeline branch that answers them.

The pipeline here runs with the real built-in agents, a real policy (LocalAuthorizer over
PolicySet) and real certificates for the signed requests; nothing crosses a subject, so no
broker is needed (tests/integration/test_unsigned.py does the same over a real nats-server).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmc.authz.local import LocalAuthorizer
from nmc.authz.policy import parse_policy
from nmc.authz.policyset import PolicySet
from nmc.ops.config.files import KNOWN_KEYS, load_config
from nmc.ops.config.settings import SettingsError, node_settings
from nmc.protocol.ddl import Input
from nmc.protocol.envelope import Request, new_request_id
from nmc.protocol.status import Status
from nmc.protocol.subjects import all_subject, node_subject
from nmc.protocol.unsigned import (
    UNSIGNED_CALLER,
    UnsignedConfigError,
    check_unsigned_actions,
    parse_unsigned_actions,
)
from nmc.security import ReplayCache, Signer, Verifier, create_ca, issue_certificate
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.agents import BUILTIN_AGENTS
from nmc.services.facts import NodeFacts
from nmc.services.pipeline import PipelineSettings, RequestPipeline

IDENTITY = "node1.example.net"
SPECS = {cls.name: cls.spec() for cls in BUILTIN_AGENTS}


class Counter(Agent):
    """A mutating action (counts its runs) next to a read-only one, to prove which ones can run unsigned."""

    name = "counter"
    runs: list[str] = []

    @action("count one run", inputs=(Input("n", "integer"),))
    async def bump(self, req: ActionRequest) -> dict[str, Any]:
        Counter.runs.append(req.caller)
        return {"runs": len(Counter.runs)}

    @action("how many runs so far", readonly=True)
    async def peek(self, req: ActionRequest) -> dict[str, Any]:
        return {"runs": len(Counter.runs), "caller": req.caller}


class _Node:
    identity, collective, started = IDENTITY, "nmc", time.time()

    def snapshot(self) -> NodeFacts:
        return NodeFacts(facts={"role": "web", "country": "de"}, classes=("base",))

    def agent_specs(self) -> list[Any]:
        return [a.spec() for a in (*BUILTIN_AGENTS, Counter)]

    def stats(self) -> dict[str, int]:
        return {}


_CA_KEY, _CA_CERT = create_ca("unsigned test CA")
ALICE = Signer(*issue_certificate(_CA_KEY, _CA_CERT, "alice"))
POLICY = "policy default deny\nallow\tunsigned=nats\tget_fact ping peek\t*\nallow\tcert=alice\t*\t*\n"


def pipeline(unsigned: tuple[str, ...] = ("rpcutil.get_fact", "rpcutil.ping", "counter.peek"),
             policy: str = POLICY, **limits: Any) -> RequestPipeline:
    agents = {cls.name: cls(_Node()) for cls in (*BUILTIN_AGENTS, Counter)}
    policies = PolicySet.from_texts({"default.policy": policy})
    return RequestPipeline(settings=PipelineSettings(identity=IDENTITY, collective="nmc", unsigned_actions=unsigned,
                                                     **limits),
                           verifier=Verifier([_CA_CERT]), agents=agents, snapshot=_Node().snapshot,
                           replay=ReplayCache(), authorizer=LocalAuthorizer(policies))


def ask(p: RequestPipeline, agent: str, act: str, body: bytes = b"", headers: dict[str, str] | None = None,
        subject: str | None = None) -> Any:
    outcome = asyncio.run(p.handle(subject or node_subject("nmc", IDENTITY, agent, act), body, headers))
    assert outcome.reply is not None
    assert "\n" not in outcome.reply.message
    return outcome.reply


# --- the allowlist ----------------------------------------------------------


def test_allowlist_entries_are_agent_dot_action_without_wildcards():
    assert parse_unsigned_actions([" rpcutil.ping", "rpcutil.get_fact "]) == {("rpcutil", "ping"),
                                                                              ("rpcutil", "get_fact")}
    for bad in ("rpcutil", "rpcutil.", ".ping", "rpcutil.*", "*.ping", "a.b.c"):
        with pytest.raises(UnsignedConfigError, match="is not agent.action"):
            parse_unsigned_actions([bad])


def test_only_read_only_actions_of_loaded_agents_may_be_allowlisted():
    check_unsigned_actions({("rpcutil", a) for a in SPECS["rpcutil"].actions}, SPECS)
    check_unsigned_actions({("puppet", "status"), ("package", "status"), ("service", "status")}, SPECS)
    for agent, act in (("puppet", "runonce"), ("puppet", "disable"), ("shell", "run"), ("package", "install"),
                       ("service", "restart")):
        with pytest.raises(UnsignedConfigError) as info:
            check_unsigned_actions({(agent, act)}, SPECS)
        assert info.value.reason == (f"{agent}.{act} is not read-only (its DDL does not say readonly=True), "
                                     "so it can never be run unsigned")
    with pytest.raises(UnsignedConfigError, match="no agent 'nosuch' is loaded"):
        check_unsigned_actions({("nosuch", "ping")}, SPECS)
    with pytest.raises(UnsignedConfigError, match="agent rpcutil has no action 'nosuch'"):
        check_unsigned_actions({("rpcutil", "nosuch")}, SPECS)


def test_builtin_ddls_mark_exactly_the_actions_that_change_nothing_as_read_only():
    readonly = {(a, n) for a, spec in SPECS.items() for n, s in spec.actions.items() if s.readonly}
    assert readonly == {("rpcutil", n) for n in ("ping", "inventory", "get_fact", "agent_inventory", "daemon_stats")} | {
        ("puppet", "status"), ("puppet", "last_run_summary"), ("package", "status"), ("service", "status")}
    ddl = SPECS["rpcutil"].to_dict()["actions"]
    assert ddl["ping"]["readonly"] is True  # `nmc plugin ddl` shows it
    assert "readonly" not in SPECS["puppet"].to_dict()["actions"]["runonce"]


def test_a_pipeline_refuses_a_mutating_action_or_no_policy_at_construction():
    with pytest.raises(UnsignedConfigError, match="counter.bump is not read-only"):
        pipeline(("counter.bump",))
    agents = {cls.name: cls(_Node()) for cls in BUILTIN_AGENTS}
    with pytest.raises(UnsignedConfigError, match="needs authz.mode = local or service"):
        RequestPipeline(settings=PipelineSettings(identity=IDENTITY, collective="nmc",
                                                  unsigned_actions=("rpcutil.ping",)),
                        verifier=Verifier([_CA_CERT]), agents=agents, snapshot=_Node().snapshot)


# --- settings ---------------------------------------------------------------


def _server_cfg(tmp_path: Path, **keys: str) -> Any:
    lines = ["identity = n1", "plugin.nats.servers = nats://127.0.0.1:4222"]
    lines += [f"{k} = {v}" for k, v in keys.items()]
    (tmp_path / "server.cfg").write_text("\n".join(lines) + "\n")
    return load_config(tmp_path / "server.cfg", kind="server", env={})


def test_setting_is_off_by_default_and_documented():
    assert KNOWN_KEYS["security.unsigned_actions"].default == ""
    assert "read-only" in KNOWN_KEYS["security.unsigned_actions"].description


def test_node_settings_read_the_allowlist(tmp_path):
    assert node_settings(_server_cfg(tmp_path)).unsigned_actions == ()
    cfg = _server_cfg(tmp_path, **{"security.unsigned_actions": "rpcutil.ping, rpcutil.get_fact",
                                   "authz.mode": "local"})
    assert node_settings(cfg).unsigned_actions == ("rpcutil.ping", "rpcutil.get_fact")


def test_node_settings_refuse_a_malformed_entry_or_authz_mode_none_in_one_line(tmp_path):
    cfg = _server_cfg(tmp_path, **{"security.unsigned_actions": "rpcutil", "authz.mode": "service"})
    with pytest.raises(SettingsError) as info:
        node_settings(cfg)
    assert info.value.reason == ("security.unsigned_actions: 'rpcutil' is not agent.action (e.g. rpcutil.get_fact; "
                                 f"no wildcards) (set at {tmp_path / 'server.cfg'}:3)")
    cfg = _server_cfg(tmp_path, **{"security.unsigned_actions": "rpcutil.ping"})
    with pytest.raises(SettingsError, match=r"^security.unsigned_actions needs authz.mode = local or service") as info:
        node_settings(cfg)
    assert "\n" not in info.value.reason and "server.cfg:3" in info.value.reason


# --- the pipeline branch ----------------------------------------------------


def test_allowlisted_unsigned_query_runs_as_the_unsigned_caller():
    p = pipeline()
    reply = ask(p, "rpcutil", "get_fact", b'{"fact":"role"}')
    assert (reply.status, reply.message, reply.identity) == (Status.OK, "OK", IDENTITY)
    assert reply.data == {"fact": "role", "value": "web"}
    assert len(reply.request_id) == 32  # the node made one up: there is no envelope to carry it
    Counter.runs = []
    assert ask(p, "counter", "peek").data == {"runs": 0, "caller": UNSIGNED_CALLER}  # empty body: no inputs
    assert ask(p, "rpcutil", "ping", b"  \n").status == Status.OK
    assert p.counters.unsigned == 3 and p.counters.validated == 0


def test_unsigned_queries_leave_no_trace_in_the_replay_cache_and_may_be_repeated():
    p = pipeline()
    first, second = (ask(p, "rpcutil", "get_fact", b'{"fact":"country"}') for _ in range(2))
    assert first.status == second.status == Status.OK and first.request_id != second.request_id
    assert len(p.replay) == 0


def test_policy_still_decides_for_the_unsigned_caller():
    p = pipeline(policy="policy default deny\nallow\tcert=alice\t*\t*\n")
    reply = ask(p, "rpcutil", "get_fact", b'{"fact":"role"}')
    assert reply.status == Status.ABORTED
    assert reply.message.startswith("not authorized: ") and "unsigned=nats" in reply.message
    assert reply.data == {}


def test_unsigned_messages_that_are_not_admitted_keep_their_refusal_and_get_a_hint():
    off = pipeline(())
    reply = ask(off, "rpcutil", "get_fact", b'{"fact":"role"}')
    assert reply.status == Status.INVALID_DATA
    assert reply.message == ("request protocol must be 'nmc.request.v2', got None; "
                             "hint: unsigned requests are off on this node (security.unsigned_actions is empty)")
    p = pipeline()
    reply = ask(p, "rpcutil", "inventory", b"")
    assert reply.status == Status.INVALID_DATA and reply.data == {}
    assert reply.message.endswith("; hint: rpcutil.inventory is not in this node's security.unsigned_actions")
    reply = ask(p, "rpcutil", "ping", subject=all_subject("nmc", "rpcutil", "ping"))
    assert reply.status == Status.INVALID_DATA
    assert reply.message.endswith("; hint: unsigned requests are answered only on "
                                  "nmc.<collective>.node.<identity>.<agent>.<action>")
    # A whole request envelope without its signature headers: today's "security:" refusal, its id, and the hint.
    envelope = Request(id=new_request_id(), collective="nmc", agent="rpcutil", action="inventory",
                       caller="cert=alice", sender="t", time=time.time(), ttl=60, targets=(IDENTITY,))
    reply = ask(p, "rpcutil", "inventory", envelope.to_bytes())
    assert reply.message.startswith("security: ") and reply.request_id == envelope.id
    assert reply.message.endswith("; hint: rpcutil.inventory is not in this node's security.unsigned_actions")
    assert p.counters.unsigned == 0


def test_an_allowlisted_query_with_bad_data_is_refused_like_any_request():
    p = pipeline(max_request_bytes=64)
    cases = [
        (b'{"fact":"' + b"x" * 80 + b'"}', Status.INVALID_DATA, "exceeds the limit of 64 bytes"),
        (b"role", Status.INVALID_DATA, "is not JSON"),
        (b'["role"]', Status.INVALID_DATA, "must be a JSON object"),
        (b'{"fact":NaN}', Status.INVALID_DATA, "is not JSON"),
        (b"{}", Status.MISSING_DATA, "missing required input 'fact'"),
        (b'{"fact":"role","x":1}', Status.INVALID_DATA, "unknown input(s) for get_fact: x"),
        (b'{"fact":"a b"}', Status.INVALID_DATA, "does not match"),
    ]
    for body, status, why in cases:
        reply = ask(p, "rpcutil", "get_fact", body)
        assert (reply.status, why in reply.message) == (status, True), (body, reply.message)


def test_signed_requests_are_unchanged_by_the_allowlist():
    p = pipeline(("rpcutil.get_fact",))
    Counter.runs = []
    req = Request(id=new_request_id(), collective="nmc", agent="counter", action="bump", caller="cert=alice",
                  sender="t", time=time.time(), ttl=60, data={"n": 1}, targets=(IDENTITY,))
    body = req.to_bytes()
    reply = ask(p, "counter", "bump", body, ALICE.headers(body))
    assert (reply.status, reply.request_id, Counter.runs) == (Status.OK, req.id, ["cert=alice"])
    # Half a signature is a signed request gone wrong, never an unsigned one.
    reply = ask(p, "rpcutil", "get_fact", b'{"fact":"role"}', {"Nmc-Certificate": ALICE.certificate_b64})
    assert reply.status == Status.INVALID_DATA and "unsigned" not in reply.message


_ACTIONS = [(a, n) for a, spec in {**SPECS, "counter": Counter.spec()}.items() for n in spec.actions]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(target=st.sampled_from(_ACTIONS), data=st.dictionaries(st.sampled_from(["fact", "n", "package", "x"]),
                                                                st.one_of(st.text(max_size=8), st.integers()),
                                                                max_size=2),
       route=st.sampled_from(["node", "all"]))
def test_no_unsigned_message_ever_runs_a_mutating_action_even_when_policy_allows_everything(target, data, route):
    # The worst case: the policy lets the unsigned caller do anything, and everything read-only is allowlisted.
    Counter.runs = []
    # (rpcutil and counter only: package/service/puppet status would start dpkg-query, systemctl, ...)
    everything = sorted(f"{a}.{n}" for a, n in _ACTIONS
                        if a in ("rpcutil", "counter") and (SPECS.get(a) or Counter.spec()).actions[n].readonly)
    p = pipeline(tuple(everything), policy="policy default allow\n")
    agent, act = target
    subject = node_subject("nmc", IDENTITY, agent, act) if route == "node" else all_subject("nmc", agent, act)
    outcome = asyncio.run(p.handle(subject, json.dumps(data).encode(), None))
    assert Counter.runs == []
    assert outcome.reply is not None
    if outcome.reply.status == Status.OK:
        assert f"{agent}.{act}" in everything and route == "node"


def test_policy_lint_knows_the_unsigned_caller():
    policy = parse_policy("allow\tunsigned=nats\tget_fact\t*\nallow\tuid=0\t*\t*\n", "rpcutil.policy")
    assert [i.message for i in policy.issues] == [
        "caller 'uid=0' can never match: nmc callers are always cert=<certificate name> (or unsigned=nats)"]
