"""`nmc policy check` and `nmc policy lint`: what a user sees, and the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nmc.cli.main import cli


@pytest.fixture
def policydir(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "puppet.policy").write_text(
        "policy default deny\n"
        "allow\tsysadmins\trunonce\t(environment=production and puppet_enabled=false) or environment=development\n"
        "allow   cert=carol   status   *   role::web\n")
    (d / "groups").write_text("sysadmins cert=sa1 cert=sa2\n")
    return d


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env or {"NMC_SERVER_CONFIG": "", "NMC_POLICY_CONFIG": ""})


def test_check_prints_decision_rule_and_reason(policydir: Path, tmp_path: Path):
    facts = tmp_path / "facts.yaml"
    facts.write_text("environment: production\npuppet_enabled: false\n")
    result = run("policy", "check", "sa1", "puppet", "runonce", "--dir", str(policydir), "--facts", str(facts))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "ALLOWED: cert=sa1 puppet.runonce",
        ("  rule:   puppet.policy:2   allow  sysadmins  runonce  (environment=production and puppet_enabled=false) "
         "or environment=development"),
        "  reason: cert=sa1 may run puppet.runonce",
    ]
    denied = run("policy", "check", "cert=sa1", "puppet", "runonce", "-d", str(policydir),
                 "--fact", "environment=production", "--fact", "puppet_enabled=true")
    assert denied.exit_code == 1
    assert denied.output.splitlines()[0] == "DENIED: cert=sa1 puppet.runonce"
    assert "facts/classes of puppet.policy:2 do not match" in denied.output
    carol = run("policy", "check", "carol", "puppet", "status", "-d", str(policydir), "--classes", "base,role::web",
                "--json")
    assert carol.exit_code == 0
    assert json.loads(carol.output) == {"caller": "cert=carol", "agent": "puppet", "action": "status",
                                        "allowed": True, "rule": "puppet.policy:3",
                                        "line": "allow   cert=carol   status   *   role::web",
                                        "reason": "cert=carol may run puppet.status"}


def test_check_takes_the_directory_from_the_server_config(policydir: Path, tmp_path: Path):
    cfg = tmp_path / "server.cfg"
    cfg.write_text("authz.policydir = policies\n")
    result = run("policy", "check", "sa2", "puppet", "runonce", "--fact", "environment=development",
                 env={"NMC_SERVER_CONFIG": str(cfg)})
    assert result.exit_code == 0 and result.output.startswith("ALLOWED")
    nowhere = run("policy", "check", "sa2", "puppet", "runonce")
    assert nowhere.exit_code == 2 and "pass --dir" in nowhere.output


def test_lint_reports_every_problem_with_file_and_line(policydir: Path):
    clean = run("policy", "lint", str(policydir))
    assert clean.exit_code == 0
    assert clean.output == f"{policydir}: 2 file(s) checked, 0 error(s), 0 warning(s)\n"
    (policydir / "service.policy").write_text("policy default deny\nallow cert=a cert=b status * x y\n"
                                              "allow\tcert=a\t*\t(environment=prod\n"
                                              "allow\tcontractors\t*\t*\n")
    (policydir / "groups").write_text("sysadmins cert=sa1 cert=sa2\nbad uid\n")
    result = run("policy", "lint", str(policydir))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "groups:2: error: group 'bad': 'uid' is not a caller id (cert=<name>)"
    assert lines[1].startswith("service.policy:2: error: ambiguous: 7 words separated by single spaces")
    assert lines[2] == ("service.policy:3: error: facts column: column 18: expected ')' to close the '(' at column 1 "
                        "(in: (environment=prod)")
    assert lines[3] == "service.policy:4: error: unknown group 'contractors': not defined in the groups file"
    assert lines[4] == f"{policydir}: 3 file(s) checked, 4 error(s), 0 warning(s)"
    missing = run("policy", "lint", str(policydir / "nope"))
    assert missing.exit_code == 1 and "does not exist" in missing.output
