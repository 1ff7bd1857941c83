"""The shared strict codec (nmc.protocol.codec), the audit record on it, and the pure import surface."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nmc.audit.errors import AuditRecordError
from nmc.audit.records import decode_record as audit_decode
from nmc.protocol import codec
from nmc.protocol.audit import AuditRecord, decode_record, record_id, record_msg_id
from nmc.protocol.codec import WireError
from nmc.protocol.envelope import EnvelopeError, Request
from nmc.protocol.registry import RecordError, RegistryEntry

NONCE = "0123456789abcdef0123456789abcdef"


def _record_body(**changes: object) -> bytes:
    record = AuditRecord(phase="decision", request_id="r1", request_time=1.0, caller="cert=a", sender="s",
                         identity="web1", collective="c", agent="a", action="b", time=1.0, nonce=NONCE)
    return json.dumps({**record.to_dict(), **changes}).encode()


@pytest.mark.parametrize(("body", "reason"), [
    (_record_body(request_time=float("nan")), "audit record is not JSON: NaN is not a JSON number"),
    (_record_body(duration_ms=float("inf")), "audit record is not JSON: Infinity is not a JSON number"),
    (_record_body().replace(b'"caller": "cert=a"', b'"caller": "cert=\xff"'), "audit record is not UTF-8 JSON"),
    (_record_body()[:-1] + b', "allowed": false}', "audit record is not JSON: duplicate key 'allowed'"),
])
def test_an_audit_record_with_nan_bad_utf8_or_a_duplicate_key_is_refused_in_one_line(body: bytes, reason: str) -> None:
    with pytest.raises(WireError) as info:
        decode_record(body)
    assert info.value.reason.startswith(reason) and "\n" not in info.value.reason
    with pytest.raises(AuditRecordError) as wrapped:  # nmc.audit's own error, same reason
        audit_decode(body)
    assert wrapped.value.reason == info.value.reason


def test_an_audit_record_round_trips_and_has_one_id_formula() -> None:
    body = _record_body()
    record = decode_record(body)
    assert record_msg_id(record) == record_id("web1", "r1", "decision", NONCE) == f"web1:r1:decision:{NONCE}"
    v1 = {k: v for k, v in record.items() if k != "nonce"}
    assert record_msg_id(v1) == record_id("web1", "r1", "decision", None) == "r1:web1:decision"


def test_every_message_refuses_duplicate_keys_with_its_own_error() -> None:
    with pytest.raises(EnvelopeError, match="duplicate key 'id'"):
        Request.from_bytes(b'{"protocol":"nmc.request.v2","id":"a","id":"b"}')
    with pytest.raises(RecordError, match="duplicate key"):
        RegistryEntry.from_bytes(b'{"protocol":"nmc.registry.v1","identity":"a","identity":"b"}')


def test_field_readers_say_which_field_and_refuse_bools_as_numbers() -> None:
    obj = codec.loads_object(b'{"n": true, "t": 1e3, "s": ["a", 1]}', "thing")
    with pytest.raises(WireError, match="thing field 'n' has the wrong type \\(bool\\)"):
        codec.number(obj, "n", "thing")
    assert codec.number(obj, "t", "thing") == 1000.0
    with pytest.raises(WireError, match="thing has no 'x' field"):
        codec.field(obj, "x", str, "thing")
    with pytest.raises(WireError, match="'s' must be a list of strings"):
        codec.strings(obj, "s", "thing")
    with pytest.raises(WireError, match="finite"):
        codec.number({"big": 10**400}, "big", "thing")


def test_the_pure_modules_load_no_part_of_nats_py() -> None:
    # In a fresh interpreter: other tests' imports must not hide an import of nats here.
    code = ("import sys, nmc.protocol, nmc.authz.policy, nmc.protocol.filter, nmc.protocol.audit, nmc.protocol.authz, "
            "nmc.authz; print([m for m in sys.modules if m.startswith('nats')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
