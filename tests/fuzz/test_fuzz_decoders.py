"""Bounded fuzzing (hypothesis) of everything that decodes untrusted input.

Each target must either succeed or raise nmc's own error type for that input;
anything else (KeyError, RecursionError, UnicodeError, ...) is a crash a
malicious peer could trigger. The node's whole request path is fuzzed too:
`RequestPipeline.handle` must answer every byte string, never raise.
Budget: NMC_FUZZ_EXAMPLES (default 1000) examples per target.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmc.protocol.envelope import EnvelopeError, Reply, Request
from nmc.protocol.filter import FilterSyntaxError, parse
from nmc.protocol.subjects import SubjectError, decode_token, parse_request_subject
from nmc.security import ReplayCache, SecurityError, Verifier, create_ca
from nmc.services.agents import BUILTIN_AGENTS
from nmc.services.facts import NodeFacts
from nmc.services.pipeline import PipelineSettings, RequestPipeline

EXAMPLES = int(os.environ.get("NMC_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
request_like = st.fixed_dictionaries({}, optional={
    "protocol": st.sampled_from(["nmc.request.v1", "nmc.reply.v1", ""]) | st.text(max_size=5),
    "id": json_values, "collective": json_values, "agent": json_values, "action": json_values,
    "data": json_values, "filter": st.text(max_size=40) | json_values, "caller": json_values,
    "sender": json_values, "time": json_values, "ttl": json_values, "request_id": json_values,
    "identity": json_values, "status": json_values, "message": json_values})
bodies = st.one_of(st.binary(max_size=300), request_like.map(lambda d: json.dumps(d).encode()))


@FUZZ
@given(bodies)
def test_envelope_decoding_raises_only_envelope_errors(body):
    for decode in (Request.from_bytes, Reply.from_bytes):
        try:
            decode(body)
        except EnvelopeError as exc:
            assert "\n" not in exc.reason


@FUZZ
@given(st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_subject_decoding_raises_only_subject_errors(text):
    for decode in (decode_token, parse_request_subject):
        try:
            decode(text)
        except SubjectError:
            pass


@FUZZ
@given(st.text(max_size=80) | st.text(alphabet="()!=~<>/ andotrx01.\"\\", max_size=80))
def test_filter_parser_raises_only_syntax_errors(text):
    try:
        parse(text)
    except FilterSyntaxError as exc:
        assert "\n" not in str(exc)


_CA_KEY, _CA_CERT = create_ca("fuzz CA")
_VERIFIER = Verifier([_CA_CERT])


class _Ctx:
    identity, collective, started = "fuzz.node", "nmc", time.time()

    def snapshot(self):
        return NodeFacts(facts={"role": "web"}, classes=("base",))

    def agent_specs(self):
        return [a.spec() for a in BUILTIN_AGENTS]

    def stats(self):
        return {}


_AGENTS = {cls.name: cls(_Ctx()) for cls in BUILTIN_AGENTS}
subjects = st.one_of(st.just("nmc.nmc.all.rpcutil.ping"), st.just("nmc.nmc.node.fuzz%2Enode.rpcutil.get_fact"),
                     st.text(max_size=40))
headers = st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["Nmc-Signature", "Nmc-Certificate", "X"]),
    st.one_of(st.text(max_size=30), st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())),
    max_size=3))


@FUZZ
@given(subject=subjects, body=bodies, hdrs=headers)
def test_node_request_path_answers_everything(subject, body, hdrs):
    pipeline = RequestPipeline(settings=PipelineSettings(identity="fuzz.node", collective="nmc"),
                               verifier=_VERIFIER, agents=_AGENTS, snapshot=_Ctx().snapshot, replay=ReplayCache())
    outcome = asyncio.run(pipeline.handle(subject, body, hdrs))
    # Nothing unsigned can pass, so every outcome is a refusal with a one-line reason.
    assert outcome.reply is not None and outcome.reply.status != 0
    assert "\n" not in outcome.reply.message
    Reply.from_bytes(outcome.reply.to_bytes())  # and the refusal itself is a valid reply


def test_security_errors_are_the_only_verifier_failures():
    for sig, cert in [(None, None), ("!!", "!!"), ("", ""), (base64.b64encode(b"x").decode(),) * 2]:
        try:
            _VERIFIER.verify(b"{}", sig, cert)
        except SecurityError:
            continue
        raise AssertionError("verify accepted garbage")


policy_lines = st.lists(st.one_of(
    st.text(max_size=60),
    st.builds(lambda verb, sep, cols: verb + sep + sep.join(cols),
              st.sampled_from(["allow", "deny", "policy default", "alow"]), st.sampled_from(["\t", "  ", " "]),
              st.lists(st.sampled_from(["*", "cert=a", "/re(/", "sysadmins", "runonce status", "role=web",
                                        "(a=1 or", "apache", "x=~/[/"]), max_size=5))), max_size=6).map("\n".join)


@FUZZ
@given(policy_lines, st.text(max_size=80))
def test_policy_parser_never_crashes_and_decisions_fail_closed(text, groups_text):
    from nmc.authz.policy import parse_groups, parse_policy
    from nmc.authz.policyset import PolicySet

    parse_policy(text, "puppet.policy")
    parse_groups(groups_text)
    policies = PolicySet.from_texts({"puppet.policy": text, "groups": groups_text})
    decision = policies.decide(caller="cert=a", agent="puppet", action="runonce", facts={"role": "web"},
                               classes=("apache",), identity="n1")
    if policies.errors:
        assert not decision.allowed, "a file with errors must deny"
    assert "\n" not in decision.reason
