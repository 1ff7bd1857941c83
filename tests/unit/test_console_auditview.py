"""The Audit page joins a request's decision and result records on one node into one row (nmc.ops.console.auditview)."""

from __future__ import annotations

from nmc.ops.console.auditview import join_requests


def record(phase: str, request_id: str, identity: str, **more: object) -> dict[str, object]:
    return {"phase": phase, "request_id": request_id, "identity": identity, "caller": "cert=alice",
            "agent": "rpcutil", "action": "ping", "time": f"{phase}-{request_id}-{identity}", **more}


def test_decision_and_result_of_one_request_on_one_node_become_one_row_newest_first():
    newest_first = [
        record("result", "r2", "web1", status=0, duration_ms=12.5),
        record("decision", "r2", "web1", allowed=True, rule="rpcutil.policy:2", data={"fact": "role"}),
        record("result", "r1", "web1", status=0, duration_ms=3.0),
        record("result", "r1", "web2", status=0, duration_ms=4.0),
        record("decision", "r1", "web2", allowed=True, rule="default.policy:1"),
        record("decision", "r1", "web1", allowed=True, rule="default.policy:1"),
    ]
    rows = join_requests(newest_first)
    assert [(r["request_id"], r["identity"]) for r in rows] == [("r2", "web1"), ("r1", "web1"), ("r1", "web2")]
    first = rows[0]
    assert (first["decision"], first["result"], first["status"], first["duration_ms"]) == (True, True, 0, 12.5)
    assert first["rule"] == "rpcutil.policy:2" and first["data"] == {"fact": "role"}
    assert first["time"] == "decision-r2-web1"  # the request's time is its decision's


def test_a_denied_request_and_a_missing_half_are_shown_as_such():
    rows = join_requests([record("decision", "r3", "web1", allowed=False, rule="default.policy:3"),
                          record("result", "r4", "web2", status=1, allowed=True, duration_ms=None)])
    denied, orphan = rows
    assert (denied["allowed"], denied["decision"], denied["result"], denied["status"]) == (False, True, False, None)
    assert (orphan["decision"], orphan["result"], orphan["status"]) == (False, True, 1)
