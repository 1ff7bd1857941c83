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


def test_every_builtin_ddl_pattern_compiles_with_re2():
    # The built-in DDLs declare their patterns with builtin_pattern, which regex_problem accepts
    # without compiling (so a node does not load RE2 at start-up); here each one is compiled.
    import importlib
    import pkgutil

    import nmc.protocol.ddls
    from nmc.protocol.regex import builtin_patterns

    for module in pkgutil.iter_modules(nmc.protocol.ddls.__path__):
        importlib.import_module(f"nmc.protocol.ddls.{module.name}")
    patterns = builtin_patterns()
    assert len(patterns) >= 8
    for pattern in patterns:
        compile_pattern(pattern)  # RegexError if RE2 refuses it


def test_re2_is_loaded_by_the_first_compiled_pattern_only():
    import subprocess
    import sys

    code = ("import sys, nmc.protocol.ddls.rpcutil, nmc.protocol.ddls.shell, nmc.protocol.ddls.puppet, "
            "nmc.protocol.ddls.package, nmc.protocol.ddls.service, nmc.protocol.filter\n"
            "assert 're2' not in sys.modules, 'RE2 loaded at import'\n"
            "from nmc.protocol.regex import search\n"
            "assert search('^a', 'abc') and 're2' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_pattern_not_declared_builtin_is_still_compiled_when_declared():
    from nmc.protocol.ddl import Input

    with pytest.raises(ValueError, match="bad validation regex"):
        Input("x", validation=r"(a)\1")
