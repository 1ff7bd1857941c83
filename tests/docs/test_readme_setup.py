"""The README's set-up promises and .ci/run agree with each other and with tests/tools.py.

The apt line the README (and the quick start guide) shows is the list of packages the suite
drives, the one .ci/run installs; .ci/run runs the README's test command verbatim.
"""

from __future__ import annotations

import re

from tests.docs.doccommands import ROOT, code_blocks
from tests.tools import APT, OPTIONAL

README = ROOT / "README.md"
QUICKSTART = ROOT / "docs" / "quickstart.md"
CI_RUN = ROOT / ".ci" / "run"
_APT_LINE = re.compile(r"apt-get install -y ((?:[a-z0-9.+-]+\s+)*[a-z0-9.+-]+)`")


def _apt_lines(text: str) -> list[tuple[str, ...]]:
    """The package lists of every inline `apt-get install -y ...` (which may wrap onto the next line)."""
    return [tuple(m.group(1).split()) for m in _APT_LINE.finditer(text)]


def _test_command() -> str:
    """The README's second set-up command: the sh block that runs pytest."""
    commands = [line for _, body in code_blocks(README) for _, line in body if "python -m pytest" in line]
    assert len(commands) == 1, commands
    return commands[0].strip()


def test_readme_and_quickstart_show_the_apt_line_of_every_package_the_tests_use():
    assert APT in _apt_lines(README.read_text(encoding="utf-8"))
    assert APT in _apt_lines(QUICKSTART.read_text(encoding="utf-8"))


def test_readme_names_the_optional_tools():
    text = " ".join(README.read_text(encoding="utf-8").split())
    for package in set(OPTIONAL.values()):
        assert package in text, package
    assert "NMC_TESTS_REQUIRE_TOOLS=1" in text


def test_ci_installs_the_same_packages_and_runs_the_readme_command_in_a_fresh_virtualenv():
    script = CI_RUN.read_text(encoding="utf-8")
    listed = re.search(r"^packages=\((.*)\)$", script, re.MULTILINE)
    assert listed is not None
    assert tuple(entry.split(":")[0] for entry in listed.group(1).split()) == APT
    assert _test_command() in script.splitlines()
    assert "python3 -m venv" in script and "NMC_TESTS_REQUIRE_TOOLS=1" in script
