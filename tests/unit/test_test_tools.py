"""tests/tools.py: a missing optional tool skips with one line, except in CI, where it fails."""

from __future__ import annotations

import pytest

from tests import tools


@pytest.fixture
def no_facter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "find_tool", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("NMC_TESTS_REQUIRE_TOOLS", raising=False)


def test_missing_tool_skips_with_the_package_to_install(no_facter: None):
    with pytest.raises(pytest.skip.Exception, match=r"^needs `facter` \(Debian package facter\): "
                                                    r"apt-get install facter$"):
        tools.require_tool("facter")
    assert tools.have_tool("facter") is False


@pytest.mark.parametrize(("var", "value"), [("CI", "true"), ("CI", "1"), ("NMC_TESTS_REQUIRE_TOOLS", "1")])
def test_missing_tool_fails_in_ci(no_facter: None, monkeypatch: pytest.MonkeyPatch, var: str, value: str):
    monkeypatch.setenv(var, value)
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install rsyslog"):
        tools.require_tool("rsyslogd")
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install puppet"):
        tools.have_tool("puppet")


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_ci_unset_or_false_skips(no_facter: None, monkeypatch: pytest.MonkeyPatch, value: str):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception):
        tools.require_tool("zsh")


def test_only_declared_tools_can_be_optional():
    with pytest.raises(ValueError, match="OPTIONAL"):
        tools.require_tool("node")

