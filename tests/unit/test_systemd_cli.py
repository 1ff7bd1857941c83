"""`nmc ops systemd` as a user runs it: files written, refusals, and systemd's own verdict on the units."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

from tests.tools import require_tool

NMC = [sys.executable, "-m", "nmc"]


def _nmc(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NMC, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd)


def _write(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _nmc("ops", "systemd", "--out", tmp_path / "units", "--etc-tree", tmp_path / "etc",
                "--etc", tmp_path / "etc", "--identity", "web1.example.com", *extra)


def test_writes_units_and_tree_and_refuses_to_overwrite(tmp_path: Path):
    first = _write(tmp_path, "--json")
    assert first.returncode == 0, first.stderr
    files = json.loads(first.stdout)
    assert {f["kind"] for f in files} == {"unit", "etc"}
    assert all(Path(f["path"]).is_file() for f in files)
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == [
        "nmc-audit.service", "nmc-console.service", "nmc-node.service", "nmc-policy.service"]

    node_unit = tmp_path / "units" / "nmc-node.service"
    node_unit.write_text("# edited by the admin\n")
    again = _write(tmp_path, "--exec", "/usr/bin/nmc")  # outside /root: no ProtectHome warning on stderr
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "use --force" in again.stderr and "Traceback" not in again.stderr
    assert node_unit.read_text() == "# edited by the admin\n"
    forced = _write(tmp_path, "--force")
    assert forced.returncode == 0 and "[Service]" in node_unit.read_text()


def test_needs_a_destination_and_never_defaults_to_etc(tmp_path: Path):
    result = _nmc("ops", "systemd", cwd=tmp_path)
    assert result.returncode == 4 and "--out DIR" in result.stderr
    assert list(tmp_path.iterdir()) == []
    printed = _nmc("ops", "systemd", "--print", "--json", cwd=tmp_path)
    assert printed.returncode == 0
    assert [u["name"] for u in json.loads(printed.stdout)] == [
        "nmc-node.service", "nmc-policy.service", "nmc-audit.service", "nmc-console.service"]
    assert list(tmp_path.iterdir()) == []


def test_bad_user_is_a_usage_error(tmp_path: Path):
    result = _nmc("ops", "systemd", "--out", tmp_path, "--user", "root")
    assert result.returncode == 4 and "--user" in result.stderr and "Traceback" not in result.stderr


def test_systemd_accepts_the_units(tmp_path: Path):
    assert _write(tmp_path).returncode == 0
    units = sorted((tmp_path / "units").glob("*.service"))
    # The structure checks systemd starts with, then systemd's own verdict where systemd-analyze is installed.
    for unit in units:
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(unit)
        assert parser.sections() == ["Unit", "Service", "Install"]
        assert Path(parser["Service"]["ExecStart"].split()[0]).is_file()
    analyze = require_tool("systemd-analyze")  # skipped with one line without it, failed in CI (tests/tools.py)
    # verify also checks that ExecStart's command exists: it is this installation's nmc.
    result = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in result.stderr.splitlines() if "nmc-" in line or str(tmp_path) in line]
    assert result.returncode == 0 and complaints == [], result.stderr


def test_written_configs_load_and_policies_lint_clean(tmp_path: Path):
    assert _write(tmp_path).returncode == 0
    etc = tmp_path / "etc"
    for name, flags in (("server.cfg", ["--server"]), ("policy.cfg", ["--server"]), ("audit.cfg", ["--server"]),
                        ("console.cfg", ["--server"]), ("client.cfg", [])):
        shown = _nmc("config", "show", *flags, "--file", etc / name, "--json")
        assert shown.returncode == 0, shown.stderr
        origins = {s["key"]: s["origin"] for s in json.loads(shown.stdout)}
        assert origins["plugin.nats.servers"].startswith(str(etc / "plugin.d" / "nats.cfg"))
    linted = _nmc("policy", "lint", etc / "policies")
    assert linted.returncode == 0 and "0 error(s), 0 warning(s)" in linted.stdout
