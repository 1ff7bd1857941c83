"""The Job page's view (nmc.ops.console.jobview): labels as `nmc jobs show`, aggregates, status and duration charts."""

from __future__ import annotations

from nmc.ops.console.jobview import action_spec, aggregate_view, duration_histogram, reply_fields, status_chart
from nmc.ops.console.live import sse
from nmc.protocol.ddls import BUILTIN_DDLS

SPECS = {d.name: d for d in BUILTIN_DDLS}
SHELL = action_spec(SPECS, "shell", "run")


def test_an_ok_reply_is_labelled_by_the_ddl_and_a_missing_output_shown_as_its_default():
    fields = reply_fields({"ok": True, "data": {"exitcode": 0, "stdout": "hi", "extra": [1]}}, SHELL)
    assert fields[0] == {"label": "Output", "value": "hi"}
    assert {"label": "Error Output", "value": ""} in fields and {"label": "Exit Code", "value": "0"} in fields
    assert fields[-1] == {"label": "extra", "value": "[1]"}  # undeclared keys after the declared outputs


def test_a_failed_reply_shows_only_what_it_says_and_an_unknown_action_its_keys():
    fields = reply_fields({"ok": False, "data": {"exitcode": 3, "stdout": "", "timed_out": False}}, SHELL)
    assert fields == [{"label": "Exit Code", "value": "3"}]
    assert action_spec(SPECS, "nosuch", "run") is None
    assert reply_fields({"ok": True, "data": {"b": None, "a": {"x": 1}}}, None) == [
        {"label": "b", "value": ""}, {"label": "a", "value": '{"x": 1}'}]


def test_status_counts_share_every_target():
    replies = [{"ok": True}, {"ok": True}, {"ok": False}]
    assert status_chart(replies, ["n4"]) == [{"status": "ok", "count": 2, "percent": 50},
                                             {"status": "failed", "count": 1, "percent": 25},
                                             {"status": "no reply", "count": 1, "percent": 25}]
    assert [row["percent"] for row in status_chart([], [])] == [0, 0, 0]


def test_the_durations_histogram_has_readable_edges_and_counts_every_reply():
    bars = duration_histogram([0.05, 0.1, 0.31, 2.9])
    assert len(bars) == 10 and [b["high"] for b in bars][:2] == [0.5, 1.0]  # 2.9 / 10 -> steps of 0.5
    assert sum(b["count"] for b in bars) == 4 and bars[0]["count"] == 3 and bars[0]["percent"] == 100
    assert bars[5]["count"] == 1 and bars[5]["percent"] == 33
    assert duration_histogram([]) == []
    assert sum(b["count"] for b in duration_histogram([0.0, 0.0])) == 2


def test_aggregates_are_the_cli_text_and_chart_rows():
    replies = [{"ok": True, "data": {"exitcode": 0}}, {"ok": True, "data": {"exitcode": 0}},
               {"ok": True, "data": {"exitcode": 1}}, {"ok": False, "data": {"exitcode": 9}}]
    [agg] = aggregate_view(SHELL, replies)
    assert agg["text"] == "Summary of Exit Code:\n\n   0 = 2\n   1 = 1"
    assert agg["rows"] == [{"value": "0", "count": 2, "percent": 67}, {"value": "1", "count": 1, "percent": 33}]
    assert aggregate_view(None, replies) == []
    [none] = aggregate_view(SHELL, [{"ok": False, "data": {}}])
    assert none["rows"] == [] and none["text"] == "Summary of Exit Code: no successful replies"


def test_a_server_sent_event_keeps_every_line_break_inside_its_data():
    assert sse("results", "a\r\nevent: end\rb\nc", "7") == (
        b"event: results\nid: 7\ndata: a\ndata: event: end\ndata: b\ndata: c\n\n")
