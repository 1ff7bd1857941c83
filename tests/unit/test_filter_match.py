"""Evaluating filters on a node's facts, classes, identity and agents."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nmc.protocol.filter import FactTerm, matches, parse

FACTS: dict[str, Any] = {
    "country": "de",
    "customer": "acme",
    "environment": "staging",
    "os": {"family": "Debian", "release": {"major": "12", "full": "12.4"}},
    "os.name": "Red Hat",  # a flat key with a dot in it
    "memorysize_mb": 2048,
    "memory_text": "512",
    "load": 0.75,
    "zero_padded": "007",
    "virtual": True,
    "physical": False,
    "kernelrelease": "5.14.0-362.el9.x86_64",
    "puppetversion": "7.10.2",
    "ips": ["10.0.0.5", "192.168.1.7"],
    "ports": [22, 80, 443],
    "nothing": None,
}
CLASSES = ("apache", "apache::mod_ssl", "role::web", "profile::base")
IDENTITY = "web1.example.com"
AGENTS = ("rpcutil", "puppet", "package")


def hit(text: str, facts: Mapping[str, Any] = FACTS) -> bool:
    return matches(parse(text), facts, CLASSES, IDENTITY, AGENTS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("country=de", True),
        ("country==de", True),
        ("country=DE", False),  # case-sensitive
        ("country!=de", False),
        ("country!=us", True),
        ("os.family=Debian", True),
        ("os.release.major>=12", True),
        ("os.release.major>12", False),
        ("os.release.full>=12", True),
        ('os.name="Red Hat"', True),
        ("os.name=~^Red", True),
        ("os=Debian", False),  # a mapping only matches through a deeper path
        ("os.release.minor=4", False),
    ],
)
def test_fact_terms_and_dotted_paths(text: str, expected: bool) -> None:
    assert hit(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("memorysize_mb>=1024", True),
        ("memorysize_mb<1024", False),
        ("memorysize_mb=2048.0", True),
        ("memory_text<1024", True),  # as text "512" > "1024"; as numbers it is smaller
        ("memory_text>64", True),
        ("zero_padded=7", True),
        ("zero_padded=7.0", True),
        ("zero_padded==007", True),
        ("zero_padded!=7", False),
        ("load<1", True),
        ("load>=0.75", True),
        ("load=.75", True),
    ],
)
def test_numbers_compare_as_numbers(text: str, expected: bool) -> None:
    assert hit(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("puppetversion>7.9.0", True),  # as text "7.10.2" < "7.9.0"
        ("puppetversion<7.10.10", True),
        ("puppetversion>=7.10.2", True),
        ("puppetversion>=7", True),
        ("puppetversion<8", True),
        ("kernelrelease>5.14.0-300.el9.x86_64", True),
        ("kernelrelease<5.14.0-1000.el9.x86_64", True),
        ("kernelrelease>=5.9", True),
    ],
)
def test_version_like_values_compare_group_by_group(text: str, expected: bool) -> None:
    assert hit(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("customer<b", True),
        ("customer>acmf", False),
        ("environment>=staging", True),
        ("environment<=stag", False),
    ],
)
def test_other_text_compares_as_text(text: str, expected: bool) -> None:
    assert hit(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("virtual=true", True),
        ("virtual=True", False),
        ("virtual!=false", True),
        ("physical=false", True),
        ("virtual=1", False),  # booleans are not numbers
        ("virtual=~^t", True),
    ],
)
def test_booleans_compare_as_true_and_false(text: str, expected: bool) -> None:
    assert hit(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ips=10.0.0.5", True),
        ("ips=10.0.0.6", False),
        ("ips=~^192\\.168\\.", True),
        ("ports=443", True),
        ("ports>400", True),
        ("ports>500", False),
        ("ports!=22", True),  # 80 differs from 22: any element may match
    ],
)
def test_a_list_fact_matches_where_any_element_does(text: str, expected: bool) -> None:
    assert hit(text) is expected


@pytest.mark.parametrize("op", ["=", "!=", "<", ">", "<=", ">=", "=~"])
@pytest.mark.parametrize("name", ["missing", "nothing", "os.missing", "country.deeper"])
def test_a_fact_the_node_does_not_have_matches_no_operator(op: str, name: str) -> None:
    assert matches(FactTerm(name, op, "x"), FACTS, CLASSES, IDENTITY, AGENTS) is False
    assert hit(f"not {name}{op}x") is True


def test_a_literal_dotted_key_wins_over_walking_into_mappings() -> None:
    facts = {"os.family": "flat", "os": {"family": "nested"}}
    assert hit("os.family=flat", facts) is True
    assert hit("os.family=nested", facts) is False
    # ...at every level, and traversal still works where no literal key exists.
    nested = {"a": {"b.c": {"d": 1}}}
    assert hit("a.b.c.d=1", nested) is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("apache", True),
        ("apache::mod", False),
        ("/::mod_/", True),
        ("/^role::(db|app)$/", False),
        ("nginx", False),
        ("role::web", True),
        ("identity(web1.example.com)", True),
        ("identity(web1)", False),
        ("identity(/^web\\d\\./)", True),
        ("identity(/^db/)", False),
        ("agent(puppet)", True),
        ("agent(pup)", False),
    ],
)
def test_class_identity_and_agent_terms(text: str, expected: bool) -> None:
    assert hit(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("((customer=acme and environment=staging) or environment=development) and /apache/", True),
        ("((customer=acme and environment=production) or environment=development) and /apache/", False),
        ("/apache/ country=de", True),
        ("/apache/ country=us", False),
        ("country=us or role::web", True),
        ("not country=us and !nginx", True),
        ("not (country=de or nginx)", False),
        ("country=us or nginx or agent(package)", True),
    ],
)
def test_boolean_combinations(text: str, expected: bool) -> None:
    assert hit(text) is expected


_ORDER = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}


@given(st.integers(-10**20, 10**20), st.integers(-10**20, 10**20), st.sampled_from(sorted(_ORDER)))
def test_integers_compare_like_integers_whether_stored_as_int_or_text(left: int, right: int, op: str) -> None:
    term = FactTerm("n", op, str(right))
    expected = _ORDER[op](left, right)
    assert matches(term, {"n": left}, (), "", ()) is expected
    assert matches(term, {"n": str(left)}, (), "", ()) is expected


_VERSIONS = st.lists(st.integers(0, 300), min_size=3, max_size=5)


@given(_VERSIONS, _VERSIONS, st.sampled_from(sorted(_ORDER)))
def test_dotted_versions_compare_like_tuples_of_numbers(left: list[int], right: list[int], op: str) -> None:
    term = FactTerm("v", op, ".".join(map(str, right)))
    fact = ".".join(map(str, left))
    assert matches(term, {"v": fact}, (), "", ()) is _ORDER[op](tuple(left), tuple(right))
