"""`nmc ops ca` through click's CliRunner (nmc.cli.ca_cmd)."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from nmc.cli.ca_cmd import ca
from nmc.security import Signer, Verifier


@pytest.fixture
def ops() -> click.Group:
    """A stand-in for `nmc ops`, which the lead wires up."""
    group = click.Group("ops")
    group.add_command(ca)
    return group


@pytest.fixture
def run(ops, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NMC_CA_DIR", raising=False)
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(ops, ["ca", *args], env=env)

    return invoke


def _assert_one_line_error(result, text):
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert text in lines[0]


def test_init_issue_show_round_trip(run, tmp_path):
    result = run("init")
    assert result.exit_code == 0, result.output
    assert "Created CA 'nmc fleet CA' (ed25519) in nmc-ca" in result.output
    result = run("issue", "alice", "--role", "ops", "--role", "web", "--key-type", "ecdsa-p256")
    assert result.exit_code == 0, result.output
    assert "Issued certificate for 'alice' (ecdsa-p256, roles ops, web)" in result.output
    ca_dir = tmp_path / "nmc-ca"
    signer = Signer.from_pem((ca_dir / "certs/alice.pem").read_bytes(), (ca_dir / "private/alice.key").read_bytes())
    verifier = Verifier.from_pem((ca_dir / "ca.pem").read_bytes())
    assert verifier.verify(b"x", signer.sign(b"x"), signer.certificate_b64) == "alice"

    result = run("show", "alice")
    assert result.exit_code == 0, result.output
    assert "name:        alice" in result.output
    assert "roles:       ops, web" in result.output
    assert "status:      valid" in result.output
    assert "fingerprint: SHA256 " in result.output


def test_show_json(run):
    run("init", "--key-type", "rsa", "--common-name", "Acme CA")
    run("issue", "web1", "--server", "--days", "30")
    result = run("show", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert (document["name"], document["is_ca"], document["key_type"]) == ("Acme CA", True, "rsa-2048")
    assert document["issued"] == ["web1"]
    document = json.loads(run("show", "web1", "--json").output)
    assert document["issuer"] == "CN=Acme CA"
    assert "IPAddress:127.0.0.1" in document["alt_names"]
    assert "issued" not in document


def test_dir_option_and_environment(run, tmp_path):
    assert run("init", "--dir", "elsewhere").exit_code == 0
    assert (tmp_path / "elsewhere" / "ca.key").exists()
    result = run("issue", "bob", env={"NMC_CA_DIR": str(tmp_path / "elsewhere")})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "certs" / "bob.pem").exists()


def test_init_twice_is_refused_with_a_hint(run):
    run("init")
    _assert_one_line_error(run("init"), "use --force")
    assert run("init", "--force").exit_code == 0


def test_issue_twice_is_refused_with_a_hint(run):
    run("init")
    run("issue", "alice")
    _assert_one_line_error(run("issue", "alice"), "already exists")
    assert run("issue", "alice", "--force").exit_code == 0


def test_issue_without_ca(run):
    _assert_one_line_error(run("issue", "alice"), "nmc ops ca init")


def test_issue_bad_name(run):
    run("init")
    _assert_one_line_error(run("issue", "../../etc/passwd"), "invalid certificate name")


def test_issue_bad_role(run):
    run("init")
    _assert_one_line_error(run("issue", "alice", "--role", "a,b"), "invalid role")


def test_show_missing(run):
    _assert_one_line_error(run("show"), "no CA certificate at")
    run("init")
    _assert_one_line_error(run("show", "ghost"), "no certificate for 'ghost'")


def test_bad_option_values_are_usage_errors(run):
    result = run("init", "--key-type", "dsa")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert run("issue", "alice", "--days", "0").exit_code == 2


@pytest.mark.parametrize("command", [[], ["init"], ["issue"], ["show"]])
def test_every_help_has_an_example(run, command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert "nmc ops ca" in result.output
