"""The filter parser and canonical printer: trees, errors with columns, round trips."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmc.protocol.regex import regex_problem
from nmc.protocol.filter import (
    AgentTerm,
    And,
    ClassTerm,
    FactTerm,
    FilterSyntaxError,
    IdentityTerm,
    MatchAll,
    Node,
    Not,
    Or,
    parse,
    parse_fact_flag,
    to_string,
)

A, B, C = ClassTerm("a"), ClassTerm("b"), ClassTerm("c")


def fact(path: str, op: str, value: str) -> FactTerm:
    return FactTerm(path, op, value)


# -- trees ------------------------------------------------------------------


def test_the_mcollective_compound_example_parses_to_the_expected_tree() -> None:
    text = "((customer=acme and environment=staging) or environment=development) and /apache/"
    staging = And((fact("customer", "=", "acme"), fact("environment", "=", "staging")))
    expected = And((Or((staging, fact("environment", "=", "development"))), ClassTerm("apache", regex=True)))
    assert parse(text) == expected
    assert to_string(parse(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a or b and c", Or((A, And((B, C))))),
        ("a and b or c", Or((And((A, B)), C))),
        ("not a and b", And((Not(A), B))),
        ("not a or b", Or((Not(A), B))),
        ("!a b", And((Not(A), B))),
        ("not (a or b)", Not(Or((A, B)))),
        ("not not a", Not(Not(A))),
        ("(a or b) c", And((Or((A, B)), C))),
        ("a b or c", Or((And((A, B)), C))),
        ("a and b and c", And((A, B, C))),
        ("(a and b) and c", And((And((A, B)), C))),
    ],
)
def test_not_binds_tighter_than_and_which_binds_tighter_than_or(text: str, expected: Node) -> None:
    assert parse(text) == expected


def test_terms_side_by_side_mean_and() -> None:
    assert parse("/apache/ country=de") == And((ClassTerm("apache", regex=True), fact("country", "=", "de")))


@pytest.mark.parametrize("text", ["a AND b", "a And b", "NOT a", "a OR b", "Identity(x)", "AGENT(x)"])
def test_keywords_and_functions_are_case_insensitive(text: str) -> None:
    assert parse(text) == parse(text.lower())


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_filter_matches_everything(text: str) -> None:
    assert parse(text) == MatchAll()
    assert to_string(MatchAll()) == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("country=us", fact("country", "=", "us")),
        ("country==us", fact("country", "=", "us")),
        ("country!=us", fact("country", "!=", "us")),
        ("mem<10", fact("mem", "<", "10")),
        ("mem>10", fact("mem", ">", "10")),
        ("mem<=10", fact("mem", "<=", "10")),
        ("mem>=10", fact("mem", ">=", "10")),
        ("os.release.major>=12", fact("os.release.major", ">=", "12")),
        ("country = us", fact("country", "=", "us")),
        ("x=a=b<c!", fact("x", "=", "a=b<c!")),
        ("x=<5", fact("x", "=", "<5")),
        ('os.name="Red Hat"', fact("os.name", "=", "Red Hat")),
        (r'x="say \"hi\" \\ C:\dir"', fact("x", "=", r'say "hi" \ C:\dir')),
        ('x=""', fact("x", "=", "")),
        ("path=/usr/bin", fact("path", "=", "/usr/bin")),
        ("x!=/re/", fact("x", "!=", "/re/")),
        ("not=1", fact("not", "=", "1")),
        ("identity=web1", fact("identity", "=", "web1")),
    ],
)
def test_fact_terms(text: str, expected: FactTerm) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("x=/^de/", "^de"),
        ("x=~/^de/", "^de"),
        ("x=~^de", "^de"),
        ('x=~"a b"', "a b"),
        ("x=/(a|b) c/", "(a|b) c"),
        (r"x=/a\/b/", "a/b"),
        ("x=/usr/bin/", "usr/bin"),  # MCollective: a value wrapped in slashes is a regex
    ],
)
def test_regex_fact_terms(text: str, pattern: str) -> None:
    assert parse(text) == fact("x", "=~", pattern)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("apache", ClassTerm("apache")),
        ("apache::mod_ssl", ClassTerm("apache::mod_ssl")),
        ("role::web", ClassTerm("role::web")),
        ("/^role::/", ClassTerm("^role::", regex=True)),
        ('"and"', ClassTerm("and")),
        ("identity(web1.example.com)", IdentityTerm("web1.example.com")),
        ("identity( web1 )", IdentityTerm("web1")),
        (r"identity(/^web\d+/)", IdentityTerm(r"^web\d+", regex=True)),
        ('identity("odd name")', IdentityTerm("odd name")),
        ("agent(puppet)", AgentTerm("puppet")),
        ("android", ClassTerm("android")),
    ],
)
def test_class_identity_and_agent_terms(text: str, expected: Node) -> None:
    assert parse(text) == expected


def test_a_fact_and_a_group_next_to_a_keyword_lookalike_class() -> None:
    # `identity` with a space before the '(' is a class followed by a group.
    assert parse("identity (a)") == And((ClassTerm("identity"), A))


# -- errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("country=us and (", 16, "a term after '('"),
        ("country=us and ()", 16, "a term after '('"),
        ("country=us and", 14, "a term after 'and'"),
        ("a or", 4, "a term after 'or'"),
        ("not", 3, "a term after 'not'"),
        ("a !", 3, "a term after '!'"),
        ("and a", 0, "a term, not 'and'"),
        ("=x", 0, "a term"),
        ("x=", 2, "a value after '='"),
        ("x>= )", 4, "a value after '>='"),
        ("(a or b", 7, "')' to close the '(' at column 1"),
        ("a) b", 1, "the end of the filter"),
        ('x="open', 7, "'\"' to close the string that starts at column 3"),
        ("x=~/open", 8, "'/' to close the regular expression"),
        ("/apache", 7, "'/' to close the regular expression"),
        ("identity()", 9, "a name or /regex/ in identity()"),
        ("identity(a", 10, "')' to close the '(' of identity()"),
        ("agent(/x/)", 6, "an agent name in agent()"),
        ('""', 0, "a class name, not an empty string"),
    ],
)
def test_syntax_errors_report_column_and_what_was_expected(text: str, position: int, expected: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse(text)
    err = caught.value
    assert err.position == position
    assert err.expression == text
    assert err.expected.startswith(expected)
    assert str(err) == f"column {position + 1}: expected {err.expected} (in: {text})"


@pytest.mark.parametrize("text", ["x=~/a(/", "/a(/", "x=/[z-a]/", "identity(/*/)", "x=~a["])
def test_a_bad_regex_is_a_syntax_error_naming_the_regex(text: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse(text)
    assert "valid regular expression" in caught.value.expected
    assert re.search(r"/.+/ is not: ", caught.value.expected)


def test_error_message_stays_on_one_line_for_multi_line_input() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse("a and\n(")
    assert "\n" not in str(caught.value)
    assert caught.value.position == 7


def test_absurd_nesting_is_a_syntax_error_not_a_crash() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse("(" * 5000 + "a" + ")" * 5000)
    assert "nested" in caught.value.expected
    with pytest.raises(FilterSyntaxError):
        parse("not " * 5000 + "a")


def test_sixty_four_levels_of_nesting_still_parse() -> None:
    assert parse("(" * 64 + "a" + ")" * 64) == A


@given(st.text(max_size=60))
def test_parse_of_any_text_returns_or_raises_filter_syntax_error(text: str) -> None:
    try:
        parse(text)
    except FilterSyntaxError as err:
        assert 0 <= err.position <= len(text)
        assert "\n" not in str(err)


_SYNTAX = st.sampled_from(
    ["a", "x", "=", "==", "=~", "!=", "<", ">=", "!", "(", ")", "/", "\\", '"', " ", "and", "or", "not",
     "identity(", "agent(", ".", "7", "*", "[", "é"]
)


@given(st.lists(_SYNTAX, max_size=25).map("".join))
def test_parse_of_syntax_soup_returns_or_raises_filter_syntax_error(text: str) -> None:
    try:
        node = parse(text)
    except FilterSyntaxError:
        return
    assert parse(to_string(node)) == node


# -- -F flags ---------------------------------------------------------------


def test_fact_flag_takes_the_rest_of_the_text_as_value_like_mcollective() -> None:
    assert parse_fact_flag("os.name=Red Hat") == fact("os.name", "=", "Red Hat")
    assert parse_fact_flag('os.name="Red Hat"') == fact("os.name", "=", "Red Hat")
    assert parse_fact_flag("x=/a b/") == fact("x", "=~", "a b")
    assert parse_fact_flag("  release >= 12 ") == fact("release", ">=", "12")


@pytest.mark.parametrize("text", ["apache", "", "=x", "/apache/"])
def test_fact_flag_that_is_not_a_fact_term_says_so(text: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_fact_flag(text)
    assert caught.value.expected.startswith("fact<op>value")


def test_fact_flag_with_trailing_text_after_a_quoted_value_is_an_error() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_fact_flag('x="a" b')
    assert caught.value.position == 6


# -- trees validate themselves ----------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: FactTerm("x", "~=", "a"),
        lambda: FactTerm("", "=", "a"),
        lambda: FactTerm("a b", "=", "a"),
        lambda: FactTerm("x", "=~", "("),
        lambda: ClassTerm(""),
        lambda: ClassTerm("[", regex=True),
        lambda: IdentityTerm(""),
        lambda: AgentTerm(""),
        lambda: And((A,)),
        lambda: Or((A, MatchAll())),
        lambda: Not("a"),
    ],
)
def test_invalid_trees_cannot_be_built(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        build()


def test_an_escaped_slash_in_a_regex_is_stored_as_a_plain_slash() -> None:
    assert ClassTerm(r"a\/b", regex=True) == ClassTerm("a/b", regex=True)
    assert ClassTerm(r"a\\/b", regex=True).name == r"a\\/b"


# -- canonical printing and round trips -------------------------------------


@pytest.mark.parametrize(
    ("node", "text"),
    [
        (fact("os.name", "=", "Red Hat"), 'os.name="Red Hat"'),
        (fact("x", "=", 'a"b'), 'x=a"b'),
        (fact("x", "=", '"a'), r'x="\"a"'),
        (fact("x", "=", "=a"), 'x="=a"'),
        (fact("x", "=", "/usr/bin"), 'x="/usr/bin"'),
        (fact("x", "=~", "a/b"), r"x=~/a\/b/"),
        (ClassTerm("or"), '"or"'),
        (ClassTerm("a b"), '"a b"'),
        (AgentTerm("a b"), 'agent("a b")'),
        (Not(And((A, B))), "not (a and b)"),
        (Or((And((A, B)), C)), "(a and b) or c"),
        (And((Or((A, B)), C)), "(a or b) and c"),
    ],
)
def test_canonical_text_quotes_only_when_needed(node: Node, text: str) -> None:
    assert to_string(node) == text
    assert parse(text) == node


def _compiles(pattern: str) -> bool:
    return regex_problem(pattern) is None  # the engine filters use (RE2)


_NAME_CHARS = st.characters(codec="utf-8").filter(lambda c: not c.isspace() and c not in '()"=<>!~')
_PATHS = st.text(_NAME_CHARS, min_size=1, max_size=8).filter(lambda p: not p.startswith("/"))
_NAMES = st.text(min_size=1, max_size=8) | st.sampled_from(["and", "OR", "not", "identity", "agent", "/x/", "a/b"])
_VALUES = st.text(max_size=8) | st.sampled_from(["=x", "~x", "/x/", "<5", "a\\", 'a"b', "x y", "(", "true", "é ü"])
_REGEXES = st.text(st.sampled_from("ab/\\.* ()|^$[]\"\n"), max_size=8).filter(_compiles)
_LITERAL_OPS = st.sampled_from(["=", "!=", "<", ">", "<=", ">="])

_TERMS = st.one_of(
    st.builds(FactTerm, _PATHS, _LITERAL_OPS, _VALUES),
    st.builds(FactTerm, _PATHS, st.just("=~"), _REGEXES),
    st.builds(ClassTerm, _NAMES),
    st.builds(ClassTerm, _REGEXES, st.just(True)),
    st.builds(IdentityTerm, _NAMES),
    st.builds(IdentityTerm, _REGEXES, st.just(True)),
    st.builds(AgentTerm, _NAMES),
)
_TREES = st.recursive(
    _TERMS,
    lambda children: st.one_of(
        children.map(Not),
        st.lists(children, min_size=2, max_size=3).map(lambda ops: And(tuple(ops))),
        st.lists(children, min_size=2, max_size=3).map(lambda ops: Or(tuple(ops))),
    ),
    max_leaves=8,
)


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
@settings(max_examples=300)
@given(_TREES)
def test_printing_then_parsing_gives_back_the_same_tree(node: Node) -> None:
    text = to_string(node)
    assert parse(text) == node
    assert to_string(parse(text)) == text
