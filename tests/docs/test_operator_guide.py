"""docs/operator-guide.md on one machine: its CA, broker-config, config and policy steps, run as written.

Paths of the guide (/etc/..., /var/..., ~/...) are moved under a temporary directory; the files
the guide shows (blocks whose first line is `# /path`) are written there. The daemons
(`nmc serve ...`, `nmc ops broker --tls`) and the commands that need a running fleet are left to
the integration tests; here every other command runs, in the guide's order, and must succeed
(the one policy check the guide shows being denied must exit 1).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.docs.doccommands import ROOT, code_blocks, doc_commands

GUIDE = ROOT / "docs" / "operator-guide.md"
NEEDS_A_FLEET = {("serve",), ("audit",), ("ops", "broker", "--tls"), ("ops", "setup")}


def _moved(text: str, root: Path) -> str:
    for prefix in ("/etc/", "/var/", "/opt/"):
        text = text.replace(f" {prefix}", f" {root}{prefix}").replace(f"={prefix}", f"={root}{prefix}")
    return text.replace("~/", f"{root}/home/")


def _offline(args: tuple[str, ...]) -> bool:
    while args[:1] == ("--config",):  # a root option in front of the command
        args = args[2:]
    return not any(args[: len(prefix)] == prefix for prefix in NEEDS_A_FLEET)


def test_operator_guide_walk(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NMC_")} | {"HOME": str(tmp_path / "home")}
    for _, body in code_blocks(GUIDE):
        first = body[0][1] if body else ""
        if first.startswith(("# /", "# ~/")):
            target = Path(_moved(" " + first[2:], tmp_path).strip())
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(_moved(text, tmp_path) for _, text in body[1:]) + "\n")
    commands = [c for c in doc_commands(GUIDE) if _offline(c.args)]
    assert [c.args[:3] for c in commands][:3] == [("ops", "ca", "init"), ("ops", "ca", "issue"), ("ops", "ca", "issue")]
    outputs = {}
    for cmd in commands:
        line = _moved(" " + cmd.text, tmp_path)
        ran = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=60)
        expected = 1 if cmd.args[:3] == ("policy", "check", "bob") else 0
        assert ran.returncode == expected, f"{cmd.where}: {line}\n{ran.stdout}{ran.stderr}"
        outputs[cmd.args[:5]] = ran.stdout
    ca = tmp_path / "etc" / "nmc" / "ca"
    assert {p.name for p in (ca / "certs").glob("*.pem")} == {
        f"{n}.pem" for n in ("nats1.example.com", "web1.example.com", "web2.example.com", "nmc-policy", "nmc-audit",
                             "nmc-operator")}
    assert [p.name.split(".")[0] for p in (ca / "old").glob("*.pem")] == ["alice"]  # revoked at the end
    assert "DENIED: cert=bob puppet.runonce" in outputs[("policy", "check", "bob", "puppet", "runonce")]
    assert "0 error(s)" in outputs[("policy", "lint", "/etc/nmc/policies")]
    # The guide's `config show` of the node's file: the values of its server.cfg, from that file.
    shown = outputs[("config", "show", "--server", "--file", "/etc/nmc/server.cfg")]
    assert "web1.example.com" in shown and "authz.signers" in shown and "nmc-policy" in shown

    # After the revocation at the end of the guide, its broker step leaves alice out.
    broker = next(c for c in commands if c.args[:3] == ("ops", "broker", "config"))
    regenerated = subprocess.run(["bash", "-c", _moved(" " + broker.text, tmp_path)], cwd=tmp_path, env=env, check=False,
                                 capture_output=True, text=True, timeout=60)
    assert regenerated.returncode == 0, regenerated.stderr
    conf = (tmp_path / "etc" / "nmc" / "nats-server.conf").read_text()
    assert 'user: "web1.example.com"' in conf and 'user: "nmc-audit"' in conf and 'user: "nmc-operator"' in conf
    assert 'user: "alice"' not in conf
    assert 'listen: "0.0.0.0:4222"' in conf  # written only: nothing listens in this test
