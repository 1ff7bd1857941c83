"""Audit records as bytes, their ids, redaction of sensitive inputs, and every output format. Pure code."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nmc.audit.errors import AuditRecordError
from nmc.audit.formats import (
    json_line,
    line_msg_id,
    mcollective_line,
    octet_counted,
    ruby_inspect,
    syslog_message,
    text_line,
)
from nmc.audit.reader import AuditQuery
from nmc.audit.records import decode_record, encode_record, redact_inputs
from nmc.protocol.audit import AuditRecord, header_msg_id, record_msg_id, upgrade_record
from nmc.protocol.ddl import ActionSpec, Input

T = datetime(2025, 11, 25, 12, 0, 0, 123000, tzinfo=timezone.utc).timestamp()


NONCE = "0123456789abcdef0123456789abcdef"


def rec(phase: str = "decision", **kw) -> AuditRecord:
    fields = dict(phase=phase, request_id="abc123", request_time=1764072000.5, caller="cert=alice", sender="admin.host",
                  identity="web1.example.com", collective="production", agent="puppet", action="runonce",
                  data={"tags": "ntp", "noop": True}, allowed=True, rule="puppet.policy:4", time=T, nonce=NONCE)
    fields.update(kw)
    return AuditRecord(**fields)


def test_encode_decode_round_trip_has_the_protocol_fields() -> None:
    record = rec("result", status=0, duration_ms=12.5)
    out = decode_record(encode_record(record))
    assert out == record.to_dict()
    assert list(out) == ["protocol", "phase", "time", "request_id", "request_time", "caller", "sender", "identity",
                         "collective", "agent", "action", "data", "allowed", "rule", "status", "duration_ms", "nonce"]
    assert out["protocol"] == "nmc.audit.v2" and out["time"] == "2025-11-25T12:00:00.123Z"
    assert record_msg_id(out) == record.msg_id == f"web1%2Eexample%2Ecom:abc123:result:{NONCE}"


def test_every_record_has_its_own_unguessable_id() -> None:
    first, again = (AuditRecord(phase="decision", request_id="r1", request_time=0.0, caller="cert=a", sender="s",
                                identity="n1", collective="c", agent="a", action="b") for _ in range(2))
    assert re.fullmatch(r"[0-9a-f]{32}", first.nonce) and first.nonce != again.nonce
    assert first.msg_id != again.msg_id, "a request run twice by one node leaves two records"
    assert first.msg_id.startswith("n1:r1:decision:")
    # The identity is a subject token, so no request id can make one node's id another node's.
    assert rec(identity="a:b", request_id="c").msg_id != rec(identity="a", request_id="b:c").msg_id


def test_an_old_v1_record_still_decodes_and_keeps_its_old_id() -> None:
    v1 = {k: v for k, v in rec().to_dict().items() if k != "nonce"} | {"protocol": "nmc.audit.v1"}
    out = decode_record(json.dumps(v1).encode())
    assert "nonce" not in out and record_msg_id(out) == "abc123:web1.example.com:decision"
    upgraded = upgrade_record(out)
    assert upgraded["protocol"] == "nmc.audit.v2" and re.fullmatch(r"[0-9a-f]{32}", upgraded["nonce"])
    assert decode_record(json.dumps(upgraded).encode()) == upgraded
    assert upgrade_record(rec().to_dict()) == rec().to_dict()


def test_fields_outside_the_schema_are_dropped() -> None:
    body = json.dumps({**rec().to_dict(), "verified": True, "extra": [1]}).encode()
    assert decode_record(body) == rec().to_dict()


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\xff", "not UTF-8 JSON"),
    (b"[]", "must be a JSON object"),
    ("\ufeff{}".encode(), "byte order mark"),
    (json.dumps(rec().to_dict()).encode("utf-16"), "not UTF-8 JSON"),
    (b'{"protocol": "nmc.audit.v2", "x": NaN}', "not JSON"),
    (b'{"protocol": "nmc.audit.v2", "x": 1e400}', "not JSON"),
    (b'{"protocol": "nmc.audit.v2", "x": "\\ud800"}', "lone surrogate"),
    (b"[" * 100_000, "nested too deeply"),
    (json.dumps({**rec().to_dict(), "request_time": True}).encode(), "'request_time' must be a number"),
    (json.dumps({**rec().to_dict(), "status": False}).encode(), "'status'"),
    (json.dumps({**rec().to_dict(), "duration_ms": "1"}).encode(), "'duration_ms'"),
    (json.dumps({**rec().to_dict(), "allowed": 1}).encode(), "'allowed'"),
    (json.dumps({**rec().to_dict(), "time": "yesterday"}).encode(), "RFC 3339"),
    (json.dumps({**rec().to_dict(), "time": "2025-11-25T12:00:00"}).encode(), "time zone"),
    (json.dumps({**rec().to_dict(), "request_id": "x" * 129}).encode(), "1-128"),
    (json.dumps({**rec().to_dict(), "nonce": "ABC"}).encode(), "'nonce'"),
    (json.dumps({k: v for k, v in rec().to_dict().items() if k != "nonce"}).encode(), "'nonce'"),
    (json.dumps({**rec().to_dict(), "rule": None}).encode(), "'rule'"),
    (b'{"protocol": "nmc.request.v1"}', "protocol"),
    (json.dumps({**rec().to_dict(), "phase": "maybe"}).encode(), "phase"),
    (json.dumps({**rec().to_dict(), "identity": ""}).encode(), "'identity'"),
    (json.dumps({**rec().to_dict(), "data": [1]}).encode(), "'data'"),
])
def test_decode_rejects_what_is_not_a_record(payload: bytes, reason: str) -> None:
    with pytest.raises(AuditRecordError) as info:
        decode_record(payload)
    assert reason in info.value.reason


def test_header_msg_id_is_stable_and_header_safe() -> None:
    assert header_msg_id("abc:web1:decision") == "abc:web1:decision"
    odd = header_msg_id("id with spaces\r\n:web1:decision")
    assert odd.startswith("sha256:") and odd == header_msg_id("id with spaces\r\n:web1:decision")
    assert all(33 <= ord(c) <= 126 for c in odd)


def test_sensitive_inputs_are_redacted_and_nothing_else() -> None:
    spec = ActionSpec("login", inputs=(Input("user"), Input("password", sensitive=True), Input("token", sensitive=True)))
    data = {"user": "alice", "password": "hunter2", "extra": "kept"}
    assert redact_inputs(spec, data) == {"user": "alice", "password": "***", "extra": "kept"}
    assert data["password"] == "hunter2"  # the request itself is untouched
    assert redact_inputs(None, data) == data
    assert Input("password", sensitive=True).to_dict()["sensitive"] is True
    assert "sensitive" not in Input("user").to_dict()


def test_json_line_is_one_line_of_the_record() -> None:
    record = rec(data={"msg": "two\nlines", "ü": "ß"}).to_dict()
    line = json_line(record)
    assert "\n" not in line and json.loads(line) == record
    assert line_msg_id(line) == f"web1%2Eexample%2Ecom:abc123:decision:{NONCE}"
    old = json_line({k: v for k, v in record.items() if k != "nonce"} | {"protocol": "nmc.audit.v1"})
    assert line_msg_id(old) == "abc123:web1.example.com:decision"  # lines written before v2 keep their ids


def test_mcollective_line_keeps_the_classic_prefix_and_reads_back() -> None:
    line = mcollective_line(rec("result", status=0, duration_ms=3.5).to_dict())
    classic = re.match(r"\[(\S+)\] reqid=(\S+): reqtime=(\d+) caller=(\S+) agent=(\S+) action=(\S+) data=(.*)$", line)
    assert classic is not None, line
    assert classic.groups()[:6] == ("2025-11-25T12:00:00.123000Z", "abc123", "1764072000", "cert=alice@admin.host",
                                    "puppet", "runonce")
    assert classic.group(7).startswith('{:tags=>"ntp", :noop=>true}')
    assert line.endswith(" allowed=true rule=puppet.policy:4 status=0 duration_ms=3.5 identity=web1.example.com "
                         f"phase=result nonce={NONCE}")
    assert line_msg_id(line) == f"web1%2Eexample%2Ecom:abc123:result:{NONCE}"
    tricky = mcollective_line(rec(data={"note": "x identity=evil phase=result nonce=00\nmore"}).to_dict())
    assert "\n" not in tricky and line_msg_id(tricky) == f"web1%2Eexample%2Ecom:abc123:decision:{NONCE}"
    v1 = mcollective_line({k: v for k, v in rec().to_dict().items() if k != "nonce"})
    assert v1.endswith("phase=decision") and line_msg_id(v1) == "abc123:web1.example.com:decision"


def test_ruby_inspect() -> None:
    assert ruby_inspect({"a": 1, "b-c": [None, False, 2.5, "q\"s"], "d": {}}) == \
        '{:a=>1, "b-c"=>[nil, false, 2.5, "q\\"s"], :d=>{}}'


def test_line_msg_id_ignores_what_is_not_a_record() -> None:
    assert line_msg_id("") is None
    assert line_msg_id("{not json") is None
    assert line_msg_id('{"a": 1}') is None
    assert line_msg_id("some other log line") is None


RFC5424 = re.compile(r"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*\]) (.*)$")


def test_syslog_message_is_rfc5424_with_the_record_as_msg() -> None:
    record = rec(data={"who": "Zoë"}).to_dict()
    raw = syslog_message(record, facility=16)
    raw.decode("ascii")  # ASCII only, whatever the data held
    match = RFC5424.match(raw.decode())
    assert match is not None, raw
    pri, stamp, host, app, procid, msgid, sd, msg = match.groups()
    assert (int(pri), host, app, procid, msgid, sd) == (16 * 8 + 6, "web1.example.com", "nmc-audit", "-", "decision", "-")
    assert stamp == "2025-11-25T12:00:00.123000Z"
    assert json.loads(msg) == record
    denied = RFC5424.match(syslog_message(rec(allowed=False).to_dict(), facility=10).decode())
    assert denied is not None and int(denied.group(1)) == 10 * 8 + 5
    failed = RFC5424.match(syslog_message(rec("result", status=4).to_dict()).decode())
    assert failed is not None and int(failed.group(1)) % 8 == 5
    assert octet_counted(b"hello") == b"5 hello"


def test_syslog_header_fields_are_printable_ascii() -> None:
    raw = syslog_message(rec(identity="bad host\u00e9").to_dict()).decode()
    assert raw.split(" ")[2] == "bad_host_"


def test_text_line() -> None:
    assert text_line(rec().to_dict()) == ('2025-11-25T12:00:00.123Z web1.example.com decision cert=alice '
                                         'puppet.runonce allowed by puppet.policy:4 req=abc123 {"tags":"ntp","noop":true}')
    assert "DENIED" in text_line(rec(allowed=False, rule="").to_dict())
    assert text_line(rec("result", status=0, duration_ms=7.0, data={}).to_dict()).endswith("status 0 in 7 ms req=abc123")
    marked = text_line({**rec().to_dict(), "verified": False, "refused": "unsigned"})
    assert marked.startswith("UNVERIFIED (unsigned) 2025-11-25T12:00:00.123Z web1.example.com decision")


def test_query_subject_and_matching() -> None:
    assert AuditQuery().subject() == "nmc.audit.>"
    assert AuditQuery(identity="web1.example.com").subject() == "nmc.audit.*.web1%2Eexample%2Ecom"
    assert AuditQuery(collective="prod").subject() == "nmc.audit.prod.*"
    r = rec().to_dict()
    assert AuditQuery(caller="cert=alice", agent="puppet", action="runonce").matches(r)
    assert not AuditQuery(caller="cert=bob").matches(r)
    assert not AuditQuery(phase="result").matches(r)
    when = datetime.fromtimestamp(T, timezone.utc)
    assert AuditQuery(since=when, until=when).matches(r)
    assert not AuditQuery(since=when.replace(second=1)).matches(r)
    assert not AuditQuery(until=when.replace(second=0, microsecond=0)).matches(r)


@given(st.dictionaries(st.text(max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8),
    max_size=4), st.text(min_size=1, max_size=20).filter(lambda s: "\n" not in s and "\r" not in s))
def test_every_file_line_reads_back_to_its_id(data: dict, request_id: str) -> None:
    record = rec(data=data, request_id=request_id).to_dict()
    want = f"web1%2Eexample%2Ecom:{request_id}:decision:{NONCE}"
    assert line_msg_id(json_line(record)) == want
    line = mcollective_line(record)
    assert "\n" not in line
    if " " not in request_id and ": reqtime=" not in request_id:
        assert line_msg_id(line) == want
