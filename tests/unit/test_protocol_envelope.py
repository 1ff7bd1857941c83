"""Request and reply envelopes (PROTOCOL.md sections 3 and 4)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nmc.protocol.envelope import (
    REPLY_PROTOCOL,
    REQUEST_PROTOCOL,
    EnvelopeError,
    OutdatedRequestError,
    Reply,
    Request,
    new_request_id,
)
from nmc.protocol.status import Status

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)

REQUEST = {
    "protocol": REQUEST_PROTOCOL, "id": "abc123", "collective": "production", "agent": "puppet",
    "action": "runonce", "data": {"noop": True}, "filter": "os=Debian", "caller": "cert=alice",
    "sender": "admin.example.com", "time": 1764072000.123, "ttl": 60,
}
REPLY = {
    "protocol": REPLY_PROTOCOL, "request_id": "abc123", "identity": "web1.example.com", "status": 0,
    "message": "OK", "data": {"x": 1}, "time": 1764072000.456,
}


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


@settings(max_examples=100)
@given(
    id=st.text(min_size=1, max_size=128),
    collective=st.text(max_size=20), agent=st.text(max_size=20), action=st.text(max_size=20),
    caller=st.text(max_size=20), sender=st.text(max_size=20), time=finite,
    ttl=st.floats(min_value=1e-6, max_value=1e9), data=json_objects, filter=st.text(max_size=30),
)
def test_request_round_trip(id, collective, agent, action, caller, sender, time, ttl, data, filter) -> None:
    req = Request(id=id, collective=collective, agent=agent, action=action, caller=caller, sender=sender,
                  time=time, ttl=ttl, data=data, filter=filter)
    body = req.to_bytes()
    assert Request.from_bytes(body) == req
    assert json.loads(body.decode("utf-8"))["protocol"] == REQUEST_PROTOCOL


@settings(max_examples=100)
@given(
    request_id=st.text(max_size=40), identity=st.text(max_size=40), status=st.sampled_from(list(Status)),
    message=st.text(max_size=40), time=finite, data=json_objects,
)
def test_reply_round_trip(request_id, identity, status, message, time, data) -> None:
    reply = Reply(request_id=request_id, identity=identity, status=status, message=message, time=time, data=data)
    parsed = Reply.from_bytes(reply.to_bytes())
    assert parsed == reply
    assert parsed.status is status
    assert parsed.ok == (status == Status.OK)


def test_body_is_compact_utf8_json_in_contract_field_names() -> None:
    req = Request(id="i", collective="c", agent="a", action="b", caller="cert=x", sender="s", time=1.5,
                  ttl=60, data={"name": "Zoë"}, filter="")
    body = req.to_bytes()
    assert "Zoë".encode("utf-8") in body  # not \u escaped
    assert b": " not in body and b", " not in body
    assert set(json.loads(body)) == set(REQUEST)


def test_documented_examples_parse() -> None:
    req = Request.from_bytes(_body(REQUEST))
    assert (req.collective, req.agent, req.action, req.caller, req.ttl) == (
        "production", "puppet", "runonce", "cert=alice", 60.0)
    reply = Reply.from_bytes(_body(REPLY))
    assert reply.status is Status.OK and reply.identity == "web1.example.com" and reply.data == {"x": 1}


def test_new_request_ids_are_unique_and_valid() -> None:
    ids = {new_request_id() for _ in range(200)}
    assert len(ids) == 200
    for request_id in ids:
        assert Request.from_bytes(_body({**REQUEST, "id": request_id})).id == request_id


def _without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != key}


BAD_REQUESTS: list[tuple[str, bytes]] = [
    ("not json", b"hello"),
    ("empty", b""),
    ("invalid utf-8", b'{"id": "\xff"}'),
    ("utf-8 encoded surrogate", _body(REQUEST).replace(b"alice", b"al\xed\xa0\x80ce")),
    ("utf-16", json.dumps(REQUEST).encode("utf-16")),
    ("utf-8 bom", b"\xef\xbb\xbf" + _body(REQUEST)),
    ("json array", b"[1, 2]"),
    ("json string", b'"x"'),
    ("json null", b"null"),
    ("wrong protocol", _body({**REQUEST, "protocol": "nmc.request.v3"})),
    ("old protocol", _body({**REQUEST, "protocol": "nmc.request.v1"})),
    ("targets empty", _body({**REQUEST, "targets": []})),
    ("targets not a list", _body({**REQUEST, "targets": "web1"})),
    ("targets with a non-string", _body({**REQUEST, "targets": ["web1", 7]})),
    ("targets with an empty name", _body({**REQUEST, "targets": ["web1", ""]})),
    ("reply protocol", _body({**REQUEST, "protocol": REPLY_PROTOCOL})),
    ("no protocol", _body(_without(REQUEST, "protocol"))),
    ("ttl zero", _body({**REQUEST, "ttl": 0})),
    ("ttl negative", _body({**REQUEST, "ttl": -5})),
    ("ttl NaN", _body(REQUEST).replace(b'"ttl": 60', b'"ttl": NaN')),
    ("time Infinity", _body(REQUEST).replace(b'"time": 1764072000.123', b'"time": Infinity')),
    ("time -Infinity", _body(REQUEST).replace(b'"time": 1764072000.123', b'"time": -Infinity')),
    ("time overflows float", _body(REQUEST).replace(b'"time": 1764072000.123', b'"time": 1e400')),
    ("time huge integer", _body({**REQUEST, "time": 10**400})),
    ("NaN inside data", _body(REQUEST).replace(b'"noop": true', b'"noop": NaN')),
    ("lone surrogate escape", _body({**REQUEST, "sender": "\ud800"})),
    ("id empty", _body({**REQUEST, "id": ""})),
    ("id too long", _body({**REQUEST, "id": "x" * 129})),
    ("time bool", _body({**REQUEST, "time": True})),
    ("ttl bool", _body({**REQUEST, "ttl": False})),
    ("time string", _body({**REQUEST, "time": "1764072000"})),
    ("id number", _body({**REQUEST, "id": 5})),
    ("agent null", _body({**REQUEST, "agent": None})),
    ("data list", _body({**REQUEST, "data": [1]})),
    ("filter number", _body({**REQUEST, "filter": 1})),
    ("deeply nested", b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
] + [(f"missing {key}", _body(_without(REQUEST, key))) for key in REQUEST if key != "protocol"]


@pytest.mark.parametrize(("case", "body"), BAD_REQUESTS, ids=[c for c, _ in BAD_REQUESTS])
def test_request_from_bytes_rejects(case: str, body: bytes) -> None:
    with pytest.raises(EnvelopeError) as info:
        Request.from_bytes(body)
    reason = info.value.reason
    assert reason and "\n" not in reason
    assert str(info.value) == reason


def test_id_of_128_characters_is_accepted() -> None:
    assert len(Request.from_bytes(_body({**REQUEST, "id": "x" * 128})).id) == 128


def test_integer_time_and_ttl_become_floats() -> None:
    req = Request.from_bytes(_body({**REQUEST, "time": 1764072000, "ttl": 30}))
    assert isinstance(req.time, float) and isinstance(req.ttl, float)


def test_missing_field_reason_names_the_field() -> None:
    with pytest.raises(EnvelopeError) as info:
        Request.from_bytes(_body(_without(REQUEST, "caller")))
    assert "caller" in info.value.reason


def test_bool_reason_says_bool() -> None:
    with pytest.raises(EnvelopeError) as info:
        Reply.from_bytes(_body({**REPLY, "status": True}))
    assert "bool" in info.value.reason


BAD_REPLIES: list[tuple[str, bytes]] = [
    ("not json", b"{"),
    ("invalid utf-8", b"\xc3\x28"),
    ("json array", b"[]"),
    ("wrong protocol", _body({**REPLY, "protocol": REQUEST_PROTOCOL})),
    ("unknown status", _body({**REPLY, "status": 6})),
    ("negative status", _body({**REPLY, "status": -1})),
    ("status bool", _body({**REPLY, "status": True})),
    ("status float", _body({**REPLY, "status": 0.0})),
    ("status string", _body({**REPLY, "status": "0"})),
    ("time bool", _body({**REPLY, "time": False})),
    ("time NaN", _body(REPLY).replace(b'"time": 1764072000.456', b'"time": NaN')),
    ("time Infinity", _body(REPLY).replace(b'"time": 1764072000.456', b'"time": Infinity')),
    ("time huge integer", _body({**REPLY, "time": 10**400})),
    ("data Infinity", _body(REPLY).replace(b'"x": 1', b'"x": -Infinity')),
    ("data string", _body({**REPLY, "data": "x"})),
    ("identity number", _body({**REPLY, "identity": 1})),
    ("message null", _body({**REPLY, "message": None})),
] + [(f"missing {key}", _body(_without(REPLY, key))) for key in REPLY if key != "protocol"]


@pytest.mark.parametrize(("case", "body"), BAD_REPLIES, ids=[c for c, _ in BAD_REPLIES])
def test_reply_from_bytes_rejects(case: str, body: bytes) -> None:
    with pytest.raises(EnvelopeError) as info:
        Reply.from_bytes(body)
    assert info.value.reason and "\n" not in info.value.reason


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Near-valid bodies: one field replaced by an arbitrary JSON value, or dropped, or bytes cut."""
    replaced = st.builds(lambda k, v: _body({**base, k: v}), st.sampled_from(sorted(base)), json_values)
    dropped = st.builds(lambda k: _body(_without(base, k)), st.sampled_from(sorted(base)))
    cut = st.builds(lambda n: _body(base)[:n], st.integers(0, len(_body(base))))
    return st.one_of(replaced, dropped, cut)


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=200), _mutations(REQUEST), _mutations(REPLY)))
@example(b"NaN")
@example(b"1e999")
@example(b"\x00")
@example(b"\xff\xfe{\x00}\x00")
def test_arbitrary_bytes_parse_or_raise_envelope_error(body: bytes) -> None:
    for parse in (Request.from_bytes, Reply.from_bytes):
        try:
            parsed = parse(body)
        except EnvelopeError as exc:
            assert exc.reason and "\n" not in exc.reason
        else:
            # Whatever parses can be sent on again: it re-serialises to an equal envelope.
            assert parse(parsed.to_bytes()) == parsed


def test_targets_round_trip_and_are_signed_content() -> None:
    req = Request(id="i", collective="c", agent="a", action="b", caller="cert=x", sender="s", time=1.5,
                  ttl=60, targets=("web1.example.com",))
    body = req.to_bytes()
    assert json.loads(body)["targets"] == ["web1.example.com"]
    assert Request.from_bytes(body) == req
    # Without targets the field is absent (a broadcast body stays as small as before), and null reads as absent.
    plain = Request(id="i", collective="c", agent="a", action="b", caller="cert=x", sender="s", time=1.5, ttl=60)
    assert "targets" not in json.loads(plain.to_bytes())
    assert Request.from_bytes(_body({**REQUEST, "targets": None})).targets is None


def test_a_v1_request_is_refused_with_its_id_and_why() -> None:
    with pytest.raises(OutdatedRequestError) as info:
        Request.from_bytes(_body({**REQUEST, "protocol": "nmc.request.v1"}))
    assert info.value.request_id == "abc123"
    assert info.value.reason == ("nmc.request.v1 is no longer accepted: it does not say where it may run; "
                                 "upgrade the client")
    with pytest.raises(OutdatedRequestError) as info:
        Request.from_bytes(_body({**REQUEST, "protocol": "nmc.request.v1", "id": 5}))
    assert info.value.request_id == ""
