"""How a decoded audit record is written: JSON lines, MCollective's one-line format, RFC 5424 syslog, text. Pure.

Every function takes the record dict of PROTOCOL.md section 6 (as
`nmc.audit.records.decode_record` returns it) and returns text or bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from nmc.protocol.audit import record_id, record_msg_id

__all__ = ["FILE_FORMATS", "SYSLOG_FACILITIES", "event_entry", "is_event", "json_line", "line_msg_id",
           "mcollective_line", "octet_counted", "parse_time", "ruby_inspect", "syslog_message", "text_line"]

FILE_FORMATS = ("json", "mcollective")
APP_NAME = "nmc-audit"
SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
_SEVERITY_NOTICE, _SEVERITY_INFO = 5, 6
_MCO_TAIL = re.compile(r" identity=(\S+) phase=(decision|result)(?: nonce=([0-9a-f]+))?$")
_RUBY_SYMBOL = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (as in the record's `time`) as an aware datetime; ValueError if it is not one."""
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=timezone.utc)


def event_entry(event: Mapping[str, Any]) -> dict[str, Any]:
    """What the audit service writes for a verified lifecycle event (its CloudEvents JSON form, docs/events.md).

    `{"kind": "event", "time", "identity", "collective", "type", "event": {...}}`: marked as an
    event (audit records have no `kind`), with the fields a log pipeline sorts records by.
    """
    source = str(event.get("source", ""))
    parts = source.split("/")
    collective = parts[2] if len(parts) == 5 else ""
    return {"kind": "event", "time": event["time"], "identity": event["subject"], "collective": collective,
            "type": event["type"], "event": dict(event)}


def is_event(entry: Mapping[str, Any]) -> bool:
    """Whether a line's object is an event entry (event_entry), not an audit record."""
    return entry.get("kind") == "event"


def json_line(record: Mapping[str, Any]) -> str:
    """One JSON object on one line (no newline at the end); field order as in PROTOCOL.md."""
    return json.dumps(dict(record), separators=(",", ":"), ensure_ascii=False)


def ruby_inspect(value: Any) -> str:
    """`value` as Ruby's Hash#inspect would print it (MCollective's audit log shows request data so)."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            shown = f":{key}" if isinstance(key, str) and _RUBY_SYMBOL.match(key) else json.dumps(str(key))
            items.append(f"{shown}=>{ruby_inspect(item)}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(ruby_inspect(v) for v in value) + "]"
    return json.dumps(str(value))


def _escape_breaks(text: str) -> str:
    # Escaped, not folded: the line is a record that is read back, and a folded break would change it.
    return text.replace("\r", "\\r").replace("\n", "\\n")


def mcollective_line(record: Mapping[str, Any]) -> str:
    """MCollective's logfile audit line, then nmc's own fields (a central file needs identity and phase).

    ``[<time>] reqid=<id>: reqtime=<unix s> caller=<caller>@<sender> agent=<a> action=<b> data=<ruby hash>``
    followed by `` allowed=... rule=... status=... duration_ms=... identity=<node> phase=<phase> nonce=<nonce>``.
    The classic part is unchanged, so parsers that read up to `data=` keep working; identity, phase
    and nonce come last so the line's record id can be read back from its end.
    """
    stamp = parse_time(record["time"]).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    if is_event(record):  # no reqid=: never read back as a record
        event = record["event"]
        stamp = parse_time(record["time"]).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        return _escape_breaks(f"[{stamp}] event={event['type']} id={event['id']} source={event['source']} "
                              f"data={ruby_inspect(event.get('data') or {})} identity={record['identity']}")
    reqtime = int(record.get("request_time") or 0)
    classic = (f"[{stamp}] reqid={record['request_id']}: reqtime={reqtime} "
               f"caller={record['caller']}@{record.get('sender', '')} agent={record['agent']} "
               f"action={record['action']} data={ruby_inspect(record.get('data') or {})}")
    rule = record.get("rule") or "-"
    status = "-" if record.get("status") is None else record["status"]
    duration = "-" if record.get("duration_ms") is None else record["duration_ms"]
    extra = (f" allowed={'true' if record.get('allowed') else 'false'} rule={rule} status={status} "
             f"duration_ms={duration} identity={record['identity']} phase={record['phase']}")
    if record.get("nonce"):
        extra += f" nonce={record['nonce']}"
    return _escape_breaks(classic + extra)


def line_msg_id(line: str) -> str | None:
    """The de-duplication id of one written line (either file format); None if the line is not a record."""
    line = line.rstrip("\n")
    if line.startswith("{"):
        try:
            obj = json.loads(line)
            return record_msg_id(obj)
        except (ValueError, KeyError, TypeError):
            return None
    match = _MCO_TAIL.search(line)
    reqid = re.match(r"\[[^\]]*\] reqid=(.*?): reqtime=", line)
    if match is None or reqid is None:
        return None
    # No nonce: an nmc.audit.v1 line, whose id record_id writes the v1 way.
    return record_id(match.group(1), reqid.group(1), match.group(2), match.group(3) or None)


def _printable(text: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, at most `limit` characters, '-' if empty."""
    kept = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return kept or "-"


def syslog_message(record: Mapping[str, Any], *, facility: int = SYSLOG_FACILITIES["local0"]) -> bytes:
    """An RFC 5424 message: HOSTNAME = the node, APP-NAME nmc-audit, MSGID = phase, MSG = the JSON record.

    Severity is notice for a refusal (not allowed, or a result with a non-zero
    status) and info otherwise, so a syslog filter can pick out refusals.
    """
    refused = not is_event(record) and (
        not record.get("allowed", True) or (record.get("phase") == "result" and record.get("status") not in (0, None)))
    pri = facility * 8 + (_SEVERITY_NOTICE if refused else _SEVERITY_INFO)
    stamp = parse_time(record["time"]).astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    # ensure_ascii: any syslog receiver takes the message, whatever it thinks of UTF-8.
    body = json.dumps(dict(record), separators=(",", ":"), ensure_ascii=True)
    header = (f"<{pri}>1 {stamp} {_printable(str(record.get('identity', '')), 255)} {APP_NAME} - "
              f"{_printable('event' if is_event(record) else str(record.get('phase', '')), 32)} -")
    return f"{header} {body}".encode("ascii")


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing for syslog over TCP: `<length> <message>`."""
    return str(len(message)).encode("ascii") + b" " + message


def text_line(record: Mapping[str, Any]) -> str:
    """A readable one-line summary for `nmc audit tail` / `query` on a terminal."""
    what = f"{record['agent']}.{record['action']}"
    if record["phase"] == "decision":
        verdict = "allowed" if record.get("allowed") else "DENIED"
        rule = f" by {record['rule']}" if record.get("rule") else ""
        outcome = f"{verdict}{rule}"
    else:
        duration = record.get("duration_ms")
        took = f" in {duration:g} ms" if isinstance(duration, (int, float)) else ""
        outcome = f"status {record.get('status')}{took}"
    data = record.get("data") or {}
    shown = f" {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}" if data else ""
    # `nmc audit --unverified`: what a record claims, plainly marked as not vouched for by its node.
    mark = f"UNVERIFIED ({record.get('refused')}) " if record.get("verified") is False else ""
    return _escape_breaks(f"{mark}{record['time']} {record['identity']} {record['phase']:<8} {record['caller']} {what} "
                     f"{outcome} req={record['request_id']}{shown}")
