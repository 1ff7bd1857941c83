"""`--json` on the commands that write files and print a summary: ca init/issue/revoke/crl, broker config, policy lint.

Each JSON document is what the command's --help promises, and says the same as the text form:
the files it names exist and hold what the document claims.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from nmc.cli.main import cli
from nmc.ops import pki


def run(*args: str):
    return CliRunner().invoke(cli, list(args), env={"NMC_CA_DIR": "", "NO_COLOR": ""})


def test_ca_commands_print_what_they_wrote(tmp_path: Path):
    ca = tmp_path / "ca"
    init = run("ops", "ca", "init", "--dir", str(ca), "--json")
    assert init.exit_code == 0, init.output
    assert json.loads(init.output) == {"name": "nmc fleet CA", "key_type": "ed25519", "directory": str(ca),
                                       "certificate": str(ca / "ca.pem"), "key": str(ca / "ca.key")}

    issued = json.loads(run("ops", "ca", "issue", "bob", "--dir", str(ca), "--role", "user", "--json").output)
    assert (issued["name"], issued["roles"], issued["replaced_serial"]) == ("bob", ["user"], None)
    assert issued["serial"] == pki.describe(ca, "bob").serial and Path(issued["key"]).is_file()

    again = json.loads(run("ops", "ca", "issue", "bob", "--dir", str(ca), "--force", "--json").output)
    assert again["replaced_serial"] == issued["serial"] and again["serial"] != issued["serial"]

    revoked = run("ops", "ca", "revoke", "bob", "--dir", str(ca), "--reason", "superseded", "--json")
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.output) == {"name": "bob", "serial": again["serial"], "reason": "superseded",
                                          "already_revoked": False, "crl": str(ca / "crl.pem"), "entries": 1}

    crl = run("ops", "ca", "crl", "--dir", str(ca), "--days", "7", "--json")
    assert json.loads(crl.output) == {"crl": str(ca / "crl.pem"), "entries": 1, "next_update_days": 7}


def test_broker_config_json_names_the_users_and_the_file(tmp_path: Path):
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    pki.issue(ca, "alice", roles=("user",))
    pki.issue(ca, "web1", roles=("node",))
    pki.issue(ca, "nobody")  # no role: left out
    out = tmp_path / "nats.conf"
    result = run("ops", "broker", "config", "--ca-dir", str(ca), "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["output"] == str(out) and "verify_and_map" in out.read_text()
    assert {u["name"]: u["roles"] for u in doc["users"]} == {"alice": ["user"], "web1": ["node"]}
    assert [s["name"] for s in doc["skipped"]] == ["nobody"]


def test_policy_lint_json_lists_every_issue(tmp_path: Path):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "puppet.policy").write_text("policy default deny\nallow cert=a status * *\nbogus line\n")
    result = run("policy", "lint", str(d), "--json")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert (doc["directory"], doc["files_checked"], doc["errors"]) == (str(d), 1, 1)
    assert [(i["file"], i["line"], i["severity"]) for i in doc["issues"] if i["severity"] == "error"] == [
        ("puppet.policy", 3, "error")]
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "default.policy").write_text("policy default deny\nallow cert=a * * *\n")
    ok = run("policy", "lint", str(clean), "--json")
    assert ok.exit_code == 0 and json.loads(ok.output)["issues"] == []
