"""The system programs some tests drive, and what happens when one is missing.

Every test that needs a program from a Debian package asks for it here, never
with its own `shutil.which` check, so a missing program always reads the same
(pytest's `-ra` summary, one line per skipped test):

    SKIPPED [4] tests/integration/test_puppet_cli.py:119: needs `puppet` (Debian package puppet): apt-get install puppet

- Optional tools (OPTIONAL below) are ones nmc's users can do without: a node
  without facter reads YAML facts, puppet is only for the puppet agent, rsyslog
  only for the audit service's syslog sink, systemd-analyze only checks the units
  `nmc ops systemd` writes, zsh and fish only for their completion scripts,
  chromium and its chromedriver only for the console's real-browser test.
  Without one, each test that needs it is skipped with that one line.
- Node.js and its npm `nats` client (tests/integration/npmkit.py) are not optional: the
  README's test command installs the client, and the ADR-32 interop check is
  part of what the suite proves. They always fail, never skip.
- In CI (the CI environment variable set to anything but "", 0 or false, as CI
  runners and `CI=true bash .ci/run` do) or with NMC_TESTS_REQUIRE_TOOLS=1, a
  missing optional tool FAILS the test too: CI installs every package in APT, so
  a skip there would hide a broken install.

README.md's quick start names the same packages (APT) and says which are optional.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

# The one apt line that installs everything the suite uses (README.md and .ci/run say the same).
APT = ("nodejs", "npm", "facter", "puppet", "rsyslog", "systemd", "zsh", "fish", "chromium", "chromium-driver")
# Program -> the Debian package that provides it, for the tools users can do without.
OPTIONAL = {"facter": "facter", "puppet": "puppet", "rsyslogd": "rsyslog", "systemd-analyze": "systemd",
            "zsh": "zsh", "fish": "fish", "chromium": "chromium", "chromedriver": "chromium-driver"}
# Daemons such as rsyslogd live in sbin, which is not on a non-root user's PATH.
_SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
_FALSE = {"", "0", "false", "no", "off"}


def tools_required() -> bool:
    """True in CI or with NMC_TESTS_REQUIRE_TOOLS=1: a missing tool fails instead of skipping."""
    return (os.environ.get("CI", "").strip().lower() not in _FALSE
            or os.environ.get("NMC_TESTS_REQUIRE_TOOLS", "").strip().lower() not in _FALSE)


def find_tool(name: str) -> str | None:
    """The program's path: on PATH, else in the sbin directories; None when it is not installed."""
    return shutil.which(name) or shutil.which(name, path=_SBIN)


def _missing(name: str) -> str:
    package = OPTIONAL.get(name, name)
    return f"needs `{name}` (Debian package {package}): apt-get install {package}"


def require_tool(name: str) -> str:
    """The path of `name`; skips the calling test with one line when it is missing (fails in CI)."""
    if name not in OPTIONAL:
        raise ValueError(f"{name!r} is not an optional tool; add it to tests/tools.py OPTIONAL (and APT, README)")
    path = find_tool(name)
    if path is None:
        if tools_required():
            pytest.fail(f"{_missing(name)} (CI / NMC_TESTS_REQUIRE_TOOLS: every tool must be installed)",
                        pytrace=False)
        pytest.skip(_missing(name))
    return path


def have_tool(name: str) -> bool:
    """Whether `name` is installed, for a test that checks the documented behaviour without it too.

    Missing in CI (see tools_required) fails the calling test: there both branches are not an option.
    """
    if name not in OPTIONAL:
        raise ValueError(f"{name!r} is not an optional tool; add it to tests/tools.py OPTIONAL (and APT, README)")
    if find_tool(name) is not None:
        return True
    if tools_required():
        pytest.fail(f"{_missing(name)} (CI / NMC_TESTS_REQUIRE_TOOLS: every tool must be installed)", pytrace=False)
    return False


def needs_tool(name: str) -> Callable[[], Iterator[None]]:
    """An autouse fixture for a module whose every test needs `name`: `_puppet = needs_tool("puppet")`.

    It runs before the test's other fixtures, so a skip starts no fleet.
    """
    @pytest.fixture(autouse=True, name=f"_needs_{name.replace('-', '_')}")
    def _needs_tool() -> Iterator[None]:
        require_tool(name)
        yield

    return _needs_tool
