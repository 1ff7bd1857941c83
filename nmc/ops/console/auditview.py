"""The Audit page's rows: a request's decision and result records on one node, joined (PURE).

A node writes two audit records per request it handles: `decision` (who asked for what,
allowed or denied by which rule) before the action runs, and `result` (status, duration)
after. A reviewer asks about requests, not records, so the page shows one row per
(request, node) with both halves; a half that is missing (the result of a request still
running, or of a node that died; a record outside the searched time range) says so. The
JSON-lines export keeps the records as stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["join_requests"]


def _row(first: Mapping[str, Any]) -> dict[str, Any]:
    return {"request_id": first.get("request_id", ""), "identity": first.get("identity", ""),
            "caller": first.get("caller", ""), "agent": first.get("agent", ""), "action": first.get("action", ""),
            "time": first.get("time", ""), "allowed": bool(first.get("allowed", True)), "rule": first.get("rule", ""),
            "status": None, "duration_ms": None, "data": {}, "decision": False, "result": False}


def join_requests(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (request id, node) in the order their newest record came (newest first, as the search)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        key = (str(record.get("request_id", "")), str(record.get("identity", "")))
        row = rows.get(key)
        if row is None:
            row = rows[key] = _row(record)
        if record.get("phase") == "decision":
            row.update(decision=True, time=record.get("time", row["time"]), allowed=bool(record.get("allowed", True)),
                       rule=record.get("rule", ""), data=dict(record.get("data") or {}))
        elif record.get("phase") == "result":
            row.update(result=True, status=record.get("status"), duration_ms=record.get("duration_ms"))
            if not row["decision"]:
                row["allowed"] = bool(record.get("allowed", row["allowed"]))
    return list(rows.values())
