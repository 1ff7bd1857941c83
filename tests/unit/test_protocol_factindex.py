"""The fact_index setting: what nodes subscribe and what clients may route on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmc.protocol.factindex import DEFAULT_FACT_INDEX, FactIndex
from nmc.protocol.filter import matches, parse, route


def test_default_covers_top_level_and_well_known_nested():
    idx = FactIndex.parse(DEFAULT_FACT_INDEX)
    assert idx.covers("country") and idx.covers("os.family") and idx.covers("os.release.major")
    assert not idx.covers("networking.ip")


def test_exclusions_and_explicit_lists():
    idx = FactIndex.parse("role, -uptime, dc")
    assert idx.covers("role") and idx.covers("dc")
    assert not idx.covers("uptime") and not idx.covers("country")
    assert idx.entries({"role": "web", "uptime": 5, "country": "us"}) == [("role", "web")]


@pytest.mark.parametrize("bad", ["-", "a b", "..x", ".x"])
def test_bad_items_are_refused(bad):
    with pytest.raises(ValueError, match="fact_index"):
        FactIndex.parse(bad)


def test_entries_cover_lists_numbers_and_nested_paths():
    idx = FactIndex.parse("*,os.family")
    entries = idx.entries({"roles": ["web", "db"], "slot": "007", "os": {"family": "Debian"}, "none": None})
    assert ("roles", "web") in entries and ("roles", "db") in entries
    assert ("slot", "7") in entries and ("slot", "007") in entries
    assert ("os.family", "Debian") in entries
    assert not any(path == "none" for path, _ in entries)


values = st.one_of(st.text(max_size=5), st.integers(-20, 20), st.booleans(), st.lists(st.text(max_size=3), max_size=3))


@settings(max_examples=200)
@given(value=values, wanted=st.sampled_from(["a", "7", "-3", "true", "x y", ""]))
def test_a_routed_request_reaches_every_matching_node(value, wanted):
    idx = FactIndex.parse(DEFAULT_FACT_INDEX)
    facts = {"f": value, "os": {"family": value}}
    for path in ("f", "os.family"):
        tree = parse(f'{path}="{wanted}"')
        r = route(tree, idx.covers)
        if r.kind == "fact" and matches(tree, facts, (), "n", ()):
            assert (r.name, r.value) in idx.entries(facts)
