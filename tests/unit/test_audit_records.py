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
from nmc.audit.hooks import AuditRecord
from nmc.audit.reader import AuditQuery
from nmc.audit.records import (
    decode_record,
    encode_record,
    header_msg_id,
    record_msg_id,
    redact_inputs,
)
from nmc.protocol.ddl import ActionSpec, Input

T = datetime(2025, 11, 25, 12, 0, 0, 123000, tzinfo=timezone.utc).timestamp()


def rec(phase: str = "decision", **kw) -> AuditRecord:
    fields = dict(phase=phase, request_id="abc123", request_time=1764072000.5, caller="cert=alice", sender="admin.host",
                  identity="web1.example.com", collective="production", agent="puppet", action="runonce",
                  data={"tags": "ntp", "noop": True}, allowed=True, rule="puppet.policy:4", time=T)
    fields.update(kw)
    return AuditRecord(**fields)


def test_encode_decode_round_trip_has_the_protocol_fields() -> None:
    record = rec("result", status=0, duration_ms=12.5)
    out = decode_record(encode_record(record))
    assert out == record.to_dict()
    assert list(out) == ["protocol", "phase", "time", "request_id", "request_time", "caller", "sender", "identity",
                         "collective", "agent", "action", "data", "allowed", "rule", "status", "duration_ms"]
    assert out["protocol"] == "nmc.audit.v1" and out["time"] == "2025-11-25T12:00:00.123Z"
    assert record_msg_id(out) == record.msg_id == "abc123:web1.example.com:result"


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\xff", "not UTF-8 JSON"),
    (b"[]", "not a JSON object"),
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
    assert line_msg_id(line) == "abc123:web1.example.com:decision"


def test_mcollective_line_keeps_the_classic_prefix_and_reads_back() -> None:
    line = mcollective_line(rec("result", status=0, duration_ms=3.5).to_dict())
    classic = re.match(r"\[(\S+)\] reqid=(\S+): reqtime=(\d+) caller=(\S+) agent=(\S+) action=(\S+) data=(.*)$", line)
    assert classic is not None, line
    assert classic.groups()[:6] == ("2025-11-25T12:00:00.123000Z", "abc123", "1764072000", "cert=alice@admin.host",
                                    "puppet", "runonce")
    assert classic.group(7).startswith('{:tags=>"ntp", :noop=>true}')
    assert line.endswith(" allowed=true rule=puppet.policy:4 status=0 duration_ms=3.5 identity=web1.example.com phase=result")
    assert line_msg_id(line) == "abc123:web1.example.com:result"
    tricky = mcollective_line(rec(data={"note": "x identity=evil phase=result\nmore"}).to_dict())
    assert "\n" not in tricky and line_msg_id(tricky) == "abc123:web1.example.com:decision"


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
    want = f"{request_id}:web1.example.com:decision"
    assert line_msg_id(json_line(record)) == want
    line = mcollective_line(record)
    assert "\n" not in line
    if " " not in request_id and ": reqtime=" not in request_id:
        assert line_msg_id(line) == want
