"""The web console's pure helpers: fact lookup and text, flattening, times, bar classes, the token's redirect."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from nmc.ops.console.app import _width, new_token
from nmc.ops.console.data import ConsoleQueryError, fact_text, flatten_facts, lookup_fact, parse_since

FACTS = {"role": "web", "os": {"release": {"major": "12"}, "name": "Debian"}, "os.flat": "dotted key",
         "ports": [80, 443], "empty": {}}


def test_lookup_fact_reads_dotted_paths_and_dotted_keys():
    assert lookup_fact(FACTS, "role") == "web"
    assert lookup_fact(FACTS, "os.release.major") == "12"
    assert lookup_fact(FACTS, "os.flat") == "dotted key"
    assert lookup_fact(FACTS, "os.release.minor") is None and lookup_fact(FACTS, "role.x") is None


def test_fact_text_is_one_line_and_leaves_escaping_to_the_templates():
    assert fact_text(None) == "" and fact_text("<b>") == "<b>"
    assert fact_text([80, 443]) == "[80,443]" and fact_text({"b": 1, "a": 2}) == '{"a":2,"b":1}'


def test_flatten_facts_gives_every_leaf_by_path():
    assert flatten_facts(FACTS) == [("empty", "{}"), ("os.name", "Debian"), ("os.release.major", "12"),
                                    ("os.flat", "dotted key"), ("ports", "[80,443]"), ("role", "web")]


def test_parse_since_takes_ages_and_iso_times():
    now = datetime(2026, 1, 31, 12, tzinfo=timezone.utc)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-01-30T08:00", now) == datetime(2026, 1, 30, 8, tzinfo=timezone.utc)
    assert parse_since("", now) is None and parse_since(None, now) is None
    with pytest.raises(ConsoleQueryError, match="bad time"):
        parse_since("yesterday", now)


def test_bar_widths_are_stylesheet_classes_in_steps_of_five():
    assert [_width(p) for p in (0, 2, 3, 49, 100, 140, -5)] == ["w0", "w0", "w5", "w50", "w100", "w100", "w0"]


def test_tokens_are_long_and_fresh():
    assert len(new_token()) >= 43 and new_token() != new_token()
