"""Subject tokens and request subjects (PROTOCOL.md section 1)."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nmc.protocol.subjects import (
    RequestSubject,
    SubjectError,
    all_subject,
    audit_subject,
    authz_subject,
    class_subject,
    decode_token,
    encode_token,
    fact_subject,
    node_subject,
    parse_request_subject,
)

TOKEN_RE = re.compile(r"^[A-Za-z0-9_%-]+$")
# Text that stresses the encoding: separators, wildcards, spaces, escapes, non-ASCII.
tricky = st.text(alphabet=st.sampled_from(list("a.*> %_-Z9é€😀\x00\t/=")), max_size=12)
any_text = st.one_of(st.text(max_size=20), tricky)


@settings(max_examples=200)
@given(any_text)
@example("")
@example(".")
@example("*")
@example(">")
@example(" ")
@example("%")
@example("%41")
@example("Red Hat")
@example("os.family")
@example("ü😀")
def test_encode_decode_round_trip(text: str) -> None:
    token = encode_token(text)
    assert TOKEN_RE.match(token), token
    assert "." not in token
    assert decode_token(token) == text


@settings(max_examples=100)
@given(any_text, any_text)
def test_distinct_texts_give_distinct_tokens(a: str, b: str) -> None:
    if a != b:
        assert encode_token(a) != encode_token(b)


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("Red Hat", "Red%20Hat"),
        ("os.family", "os%2Efamily"),
        ("a_b-C9", "a_b-C9"),
        ("*", "%2A"),
        (">", "%3E"),
        ("%", "%25"),
        ("é", "%C3%A9"),
        ("", "%"),
    ],
)
def test_encode_known_values(text: str, token: str) -> None:
    assert encode_token(text) == token


@settings(max_examples=100)
@given(st.text(min_size=1, max_size=20))
def test_encode_never_produces_lone_percent_for_non_empty_text(text: str) -> None:
    assert encode_token(text) != "%"


@pytest.mark.parametrize(
    "token",
    [
        "%41",  # 'A' must stand as itself: not canonical
        "%5F",  # '_' likewise
        "%4",  # truncated escape
        "%zz",  # not hex
        "%2e",  # lower-case hex is not what encode writes
        "a.b",  # two tokens
        "a b",  # raw space
        "a*",
        ">",
        "%FF",  # not UTF-8
        "%C3",  # truncated UTF-8 sequence
        "%C0%80",  # overlong UTF-8
        "%ED%A0%80",  # UTF-8 encoded surrogate
        "",  # NATS has no empty tokens
        "%%",
        "a%",
        "é",  # raw non-ASCII
    ],
)
def test_decode_rejects_malformed_or_non_canonical(token: str) -> None:
    with pytest.raises(SubjectError) as info:
        decode_token(token)
    assert info.value.reason


def test_documented_subject_shapes() -> None:
    assert all_subject("production", "puppet", "runonce") == "nmc.production.all.puppet.runonce"
    assert (
        fact_subject("prod", "os.family", "Red Hat", "puppet", "runonce")
        == "nmc.prod.fact.os%2Efamily.Red%20Hat.puppet.runonce"
    )
    assert class_subject("prod", "role::web", "puppet", "runonce") == "nmc.prod.class.role%3A%3Aweb.puppet.runonce"
    assert node_subject("prod", "web1.example.com", "rpcutil", "ping") == "nmc.prod.node.web1%2Eexample%2Ecom.rpcutil.ping"
    assert authz_subject("prod") == "nmc.prod.authz.check"
    assert audit_subject("prod", "web1.example.com") == "nmc.audit.prod.web1%2Eexample%2Ecom"


def test_empty_data_tokens_keep_the_subject_shape() -> None:
    subject = fact_subject("c", "", "", "a", "b")
    assert subject == "nmc.c.fact.%.%.a.b"
    assert "" not in subject.split(".")


_SHAPES = {
    "all": (0, lambda c, keys, ag, ac: all_subject(c, ag, ac)),
    "fact": (2, lambda c, keys, ag, ac: fact_subject(c, keys[0], keys[1], ag, ac)),
    "class": (1, lambda c, keys, ag, ac: class_subject(c, keys[0], ag, ac)),
    "node": (1, lambda c, keys, ag, ac: node_subject(c, keys[0], ag, ac)),
}


@settings(max_examples=150)
@given(
    kind=st.sampled_from(sorted(_SHAPES)),
    collective=any_text,
    keys=st.lists(any_text, min_size=2, max_size=2),
    agent=any_text,
    action=any_text,
)
def test_parse_request_subject_inverts_builders(kind, collective, keys, agent, action) -> None:
    n, build = _SHAPES[kind]
    subject = build(collective, keys, agent, action)
    assert all(TOKEN_RE.match(t) for t in subject.split("."))
    parsed = parse_request_subject(subject)
    assert parsed == RequestSubject(collective=collective, kind=kind, agent=agent, action=action,
                                    keys=tuple(keys[:n]))


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "nmc",
        "nmc.c.all.a",  # too short
        "nmc.c.all.a.b.c",  # all takes no key
        "nmc.c.fact.os.a.b",  # fact needs name and value
        "nmc.c.fact.os.x.a.b.c",
        "nmc.c.class.a.b",
        "nmc.c.node.a.b",
        "nmc.c.node.n.a.b.c",
        "nmc.c.authz.check",
        "nmc.audit.c.web1",
        "nmc.c.bogus.a.b",
        "xyz.c.all.a.b",
        "NMC.c.all.a.b",
        "nmc.c.all.a%41.b",  # non-canonical token
        "nmc.c.all.a.%FF",  # not UTF-8
        "nmc..all.a.b",  # empty token
        "nmc.c.all.*.b",
        "nmc.c.all.a.>",
    ],
)
def test_parse_request_subject_rejects_wrong_shapes(subject: str) -> None:
    with pytest.raises(SubjectError):
        parse_request_subject(subject)
