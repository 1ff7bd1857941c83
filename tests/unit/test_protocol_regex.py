"""Patterns from the network run in linear time (RE2), and what RE2 cannot do is refused with a reason."""

from __future__ import annotations

import pytest

from nmc.authz.policy import parse_policy
from nmc.protocol.filter import FilterSyntaxError, matches, parse
from nmc.protocol.regex import MAX_PATTERN, RegexError, compile_pattern, regex_problem, search


def test_catastrophic_pattern_is_matched_in_linear_time():
    # Python's re needs ~3**n steps here; RE2 answers at once for any length.
    assert not search(r"^(?:.|.|.)*Q", "a" * 100_000)
    assert search(r"^(?:a|a)*$", "a" * 100_000)


@pytest.mark.parametrize("pattern, words", [
    (r"(a)\1", "backreferences"),
    (r"foo(?=bar)", "look-around"),
    (r"(?<!x)y", "look-around"),
])
def test_backtracking_only_syntax_is_refused_with_the_reason(pattern, words):
    problem = regex_problem(pattern)
    assert problem is not None and words in problem


def test_overlong_pattern_is_refused():
    with pytest.raises(RegexError) as info:
        compile_pattern("a" * (MAX_PATTERN + 1))
    assert "longer than" in info.value.reason


def test_filters_use_re2():
    expr = parse(r"identity(/^(?:.|.|.)*Q/) or identity(/^node[0-9]+\./)")
    assert matches(expr, facts={}, classes=[], identity="node1.example.net", agents=[])
    assert not matches(parse(r"identity(/^(?:.|.|.)*Q/)"), facts={}, classes=[], identity="n" * 5000, agents=[])
    with pytest.raises(FilterSyntaxError) as info:
        parse(r"identity(/(x)\1/)")
    assert "backreferences" in str(info.value)


def test_policy_caller_regex_uses_re2():
    policy = parse_policy("policy default deny\nallow\t/^(?=adm)/\t*\t*\n", name="x.policy")
    assert any("look-around" in str(error) for error in policy.errors)
