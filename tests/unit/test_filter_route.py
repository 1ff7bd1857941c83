"""Routing hints (never leave out a matching node) and building filters from CLI flags."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmc.protocol.filter import (
    FactTerm,
    FilterSyntaxError,
    Route,
    Node,
    canonical_fact_value,
    combine,
    indexed_fact_values,
    matches,
    parse,
    parse_fact_flag,
    route,
    to_string,
)


def route_of(text: str) -> Route:
    return route(parse(text))


# -- route ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Route("all")),
        ("identity(web1)", Route("node", "web1")),
        ("country=de", Route("fact", "country", "de")),
        ("country==de", Route("fact", "country", "de")),
        ("apache", Route("class", "apache")),
        ("virtual=true", Route("fact", "virtual", "true")),
        ('os_name="Red Hat"', Route("fact", "os_name", "Red Hat")),
        ("apache country=de identity(web1)", Route("node", "web1")),
        ("apache and country=de", Route("fact", "country", "de")),
        ("/apache/ and role::web", Route("class", "role::web")),
        ("(country=de and apache) and agent(puppet)", Route("fact", "country", "de")),
        ("agent(puppet)", Route("all")),
    ],
)
def test_route_prefers_identity_then_fact_then_class(text: str, expected: Route) -> None:
    assert route_of(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "identity(web1) or identity(web2)",
        "not identity(web1)",
        "country=de or apache",
        "not country=de",
        "!apache",
        "(country=de or x=1) and agent(puppet)",
        "not (apache and country=de)",
    ],
)
def test_route_never_uses_a_term_under_or_or_not(text: str) -> None:
    assert route_of(text) == Route("all")


def test_a_negated_term_next_to_a_plain_one_routes_by_the_plain_one() -> None:
    assert route_of("not country=de and apache") == Route("class", "apache")
    assert route_of("(not identity(web1)) and country=de") == Route("fact", "country", "de")


@pytest.mark.parametrize(
    "text",
    [
        "x=7.0", "x=007", "x=+7", "x=-0", "x=1e3", "x=.5", "x=nan", "x=inf", "x=Infinity", "x=1_000",
        'x=" 7 "',
    ],
)
def test_numeric_looking_values_other_than_canonical_integers_broadcast(text: str) -> None:
    assert route_of(text) == Route("all")
    assert route_of(text + " and apache") == Route("class", "apache")


@pytest.mark.parametrize("value", ["0", "-3", "42", "123456789012345678901234567890"])
def test_canonical_integers_route_by_fact(value: str) -> None:
    assert route_of(f"x={value}") == Route("fact", "x", value)


@pytest.mark.parametrize(
    "text",
    ["x=~/de/", "x=/de/", "x=~de", "/apache/", "identity(/^web/)", "x!=de", "x>=de", "x<de", "os.family=Debian"],
)
def test_regexes_inequalities_and_dotted_paths_broadcast(text: str) -> None:
    assert route_of(text) == Route("all")


def test_route_values_validate_themselves() -> None:
    with pytest.raises(ValueError):
        Route("everywhere")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Route("class")
    with pytest.raises(ValueError):
        Route("all", "x")


# -- the node-side index ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("de", "de"),
        ("", ""),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (-3, "-3"),
        (7.0, None),
        (None, None),
        (["a"], None),
        ({"a": 1}, None),
    ],
)
def test_canonical_fact_value(value: Any, expected: str | None) -> None:
    assert canonical_fact_value(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("de", ("de",)),
        (True, ("true",)),
        (42, ("42",)),
        ("007", ("007", "7")),
        (7.0, ("7", "7.0")),
        ("7e0", ("7", "7e0")),
        (7.5, ("7.5",)),
        (["a", 3, ["b"], {"c": 1}, None], ("3", "a", "b")),
        ({"a": 1}, ()),
        (None, ()),
    ],
)
def test_indexed_fact_values_cover_every_value_an_equality_term_can_match(value: Any, expected: tuple[str, ...]) -> None:
    assert indexed_fact_values(value) == expected


_SCALARS = st.one_of(
    st.sampled_from(["de", "", "7", "007", "7.0", "+7", "-0", "0", "1e3", "true", "True", "nan", "x y", " 7"]),
    st.text(max_size=4),
    st.integers(-1000, 1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
_FACT_VALUES = _SCALARS | st.lists(_SCALARS, max_size=3) | st.dictionaries(st.text(max_size=2), _SCALARS, max_size=2)
_WANTED = st.sampled_from(["de", "", "7", "007", "7.0", "0", "-0", "1000", "1e3", "true", "false", "nan", "x y"]) | st.text(
    max_size=4
)


@settings(max_examples=500)
@given(_FACT_VALUES, _WANTED)
def test_a_fact_route_never_leaves_out_a_node_the_filter_matches(fact: Any, wanted: str) -> None:
    term = FactTerm("x", "=", wanted)
    chosen = route(term)
    if chosen.kind == "fact" and matches(term, {"x": fact}, (), "n1", ()):
        assert chosen.value in indexed_fact_values(fact)


@given(
    st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
    st.sampled_from(["n1", "n2"]),
    st.sampled_from(
        [
            "a", "identity(n1)", "a and identity(n2)", "x=1 and b", "a x=1", "(a and x=de) c",
            "not a and identity(n1)", "x=de and not b",
        ]
    ),
    st.sampled_from([{}, {"x": 1}, {"x": "de"}, {"x": ["1", "de"]}, {"x": "001"}]),
)
def test_class_and_node_routes_never_leave_out_a_matching_node(
    classes: list[str], identity: str, text: str, facts: dict[str, Any]
) -> None:
    node = parse(text)
    chosen = route(node)
    if not matches(node, facts, classes, identity, ()):
        return
    if chosen.kind == "node":
        assert chosen.name == identity
    elif chosen.kind == "class":
        assert chosen.name in classes
    elif chosen.kind == "fact":
        assert chosen.value in indexed_fact_values(facts[chosen.name])


# -- combine ----------------------------------------------------------------


def test_combine_joins_every_flag_with_and() -> None:
    text = combine(
        facts=["country=us", "os.release.major>=12", "x=/re/"],
        classes=["apache", "/^role::/"],
        identities=["web1"],
        agents=["puppet"],
        compound=["customer=acme or environment=development"],
    )
    assert text == (
        "country=us and os.release.major>=12 and x=~/re/ and apache and /^role::/ and identity(web1)"
        " and agent(puppet) and (customer=acme or environment=development)"
    )


def test_combine_of_nothing_is_the_empty_filter() -> None:
    assert combine() == ""
    assert combine(compound=["", "  "]) == ""


def test_several_identities_mean_any_of_them() -> None:
    assert combine(identities=["a", "b"]) == "identity(a) or identity(b)"
    assert combine(identities=["a", "/^db/"], classes=["web"]) == "web and (identity(a) or identity(/^db/))"


def test_a_single_flag_gives_just_its_term_and_routes_by_it() -> None:
    assert combine(identities=["web1.example.com"]) == "identity(web1.example.com)"
    assert route_of(combine(identities=["web1.example.com"])) == Route("node", "web1.example.com")


def test_compound_and_expressions_need_no_parentheses() -> None:
    assert combine(facts=["a=1"], compound=["b and c", "not d"]) == "a=1 and b and c and not d"


def test_fact_flag_values_may_contain_spaces_as_in_mcollective() -> None:
    text = combine(facts=["os.name=Red Hat"], agents=["package"])
    assert text == 'os.name="Red Hat" and agent(package)'
    assert parse(text) == parse('os.name="Red Hat" agent(package)')


@pytest.mark.parametrize(
    ("flags", "expression", "expected"),
    [
        ({"facts": ["apache"]}, "apache", "fact<op>value"),
        ({"facts": ["x=~/a(/"]}, "x=~/a(/", "a valid regular expression"),
        ({"classes": ["a b"]}, "a b", "a class name or /regex/"),
        ({"classes": ["x=1"]}, "x=1", "a class name or /regex/"),
        ({"identities": [" "]}, " ", "an identity"),
        ({"identities": ["/a(/"]}, "/a(/", "a valid regular expression"),
        ({"agents": ["a b"]}, "a b", "an agent name"),
        ({"compound": ["a and ("]}, "a and (", "a term after '('"),
    ],
)
def test_a_bad_flag_raises_a_syntax_error_about_that_flag(
    flags: dict[str, list[str]], expression: str, expected: str
) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        combine(**flags)  # type: ignore[arg-type]
    assert caught.value.expression == expression
    assert caught.value.expected.startswith(expected)


_NODES = st.sampled_from(
    [
        ({"x": 1, "y": 3, "a": {"b": 4}, "os": {"name": "Red Hat"}, "z": "re"}, ["web", "a", "d", "e"], "n1"),
        ({"x": "1", "y": 2, "a": {"b": 3}, "z": "ore"}, ["role::app", "c", "f", "h", "wx"], "n2.example.com"),
        ({}, ["b", "web"], "other"),
    ]
)


@given(
    st.lists(st.sampled_from(["x=1", "y!=2", "a.b>=3", "os.name=Red Hat", "z=/re/"]), max_size=2),
    st.lists(st.sampled_from(["web", "role::app", "/^w/"]), max_size=2),
    st.lists(st.sampled_from(["n1", "n2.example.com", "/^n/"]), max_size=3),
    st.lists(st.sampled_from(["puppet", "package"]), max_size=2),
    st.lists(st.sampled_from(["a or b", "not c", "d e", "(f or g) and h"]), max_size=2),
    _NODES,
)
def test_combined_filter_is_canonical_and_means_every_flag_at_once(
    facts: list[str],
    classes: list[str],
    identities: list[str],
    agents: list[str],
    compound: list[str],
    node: tuple[dict[str, Any], list[str], str],
) -> None:
    text = combine(facts=facts, classes=classes, identities=identities, agents=agents, compound=compound)
    tree = parse(text)
    assert to_string(tree) == text
    node_facts, node_classes, identity = node
    node_agents = ["puppet"]

    def hit(tree: Node) -> bool:
        return matches(tree, node_facts, node_classes, identity, node_agents)

    expected = (
        all(hit(parse_fact_flag(f)) for f in facts)
        and all(hit(parse(c)) for c in classes)
        and (not identities or any(hit(parse(combine(identities=[i]))) for i in identities))
        and all(a in node_agents for a in agents)
        and all(hit(parse(c)) for c in compound)
    )
    assert hit(tree) is expected
