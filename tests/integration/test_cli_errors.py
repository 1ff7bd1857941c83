"""Every command's typical failures are one line on stderr with a hint, never a traceback (unless --debug).

Each case runs `nmc.cli.main:main` — the console script's entry point, with its
own error formatting and exit codes — with HOME and XDG_STATE_HOME in a temp
directory and no NMC_* variables, so no real configuration is ever found. Most
cases call main() in this process (the same code path, without the ~0.5 s a
Python start costs); the cases marked `real` also run `python -m nmc` as a
child process, at least one per kind of failure, to prove the real process's
stderr and exit status. The broker of "not running" is a free 127.0.0.1 port
with nothing listening on it.

Exit status: 4 for usage errors (bad flags, filters, inputs), 1 for a failure
of the set-up (config, certificates, broker), 2 for `policy check` that could
not decide.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from nmc.cli.main import main
from nmc.ops import pki

NMC = [sys.executable, "-m", "nmc"]
pytestmark = pytest.mark.timeout(120)  # a command that retries forever instead of failing fails here


@dataclass(frozen=True)
class World:
    """Files for the failures: a CA, client configs that are wrong in different ways, broken policies."""

    root: Path

    def fill(self, arg: str) -> str:
        return arg.format(root=self.root, ca=self.root / "ca", dead=self.root / "dead.cfg",
                          missing=self.root / "missing.cfg", broken=self.root / "broken.cfg",
                          badcert=self.root / "badcert.cfg", nodir=self.root / "no-such-dir",
                          file=self.root / "a-file", pol=self.root / "policies", facts=self.root / "nope.yaml")


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("cli-errors")
    ca = root / "ca"
    pki.init_ca(ca)
    alice = pki.issue(ca, "alice", roles=("user",))
    port = _free_port()
    security = (f"plugin.security.ca_file = {ca / 'ca.pem'}\n"
                f"plugin.security.key_file = {alice.key}\n")
    (root / "dead.cfg").write_text(f"plugin.nats.servers = nats://127.0.0.1:{port}\n{security}"
                                   f"plugin.security.cert_file = {alice.certificate}\n")
    (root / "badcert.cfg").write_text(f"plugin.nats.servers = nats://127.0.0.1:{port}\n{security}"
                                      f"plugin.security.cert_file = {root / 'gone' / 'alice.pem'}\n")
    (root / "broken.cfg").write_text("identity = web1\nthis line has no equals sign\n")
    (root / "a-file").write_text("not a directory\n")
    (root / "policies").mkdir()
    (root / "policies" / "default.policy").write_text("garbage in the policy\n")
    (root / "home").mkdir()
    return World(root)


@pytest.fixture
def env(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The environment of every case: a temp HOME, no NMC_* variables, no NO_COLOR.

    Commands run in this process set up structlog to write to the captured stderr, which is
    closed after the test: the defaults are restored so later tests do not log into it.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NMC_") and k != "NO_COLOR"}
    clean.update(HOME=str(world.root / "home"), XDG_STATE_HOME=str(world.root / "home" / "state"))
    for key in [k for k in os.environ if k.startswith("NMC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", clean["HOME"])
    monkeypatch.setenv("XDG_STATE_HOME", clean["XDG_STATE_HOME"])
    monkeypatch.chdir(world.root)
    yield clean
    structlog.reset_defaults()


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    hint: str  # must be in the one stderr line
    real: bool = False  # also as a child process


def case(*args: str, code: int, hint: str, real: bool = False) -> Case:
    return Case(args, code, hint, real)


CONNECT = "`nmc dev up` starts one"
USAGE = 4
CASES = {
    # no configuration anywhere
    "ping/no-config": case("ping", code=1, hint="try `nmc dev up`", real=True),
    "rpc/no-config": case("rpc", "rpcutil", "ping", code=1, hint="try `nmc dev up`"),
    # a config naming a broker that is not running
    "ping/no-broker": case("-c", "{dead}", "ping", code=1, hint=CONNECT, real=True),
    "find/no-broker": case("-c", "{dead}", "find", "-F", "role=web", code=1, hint=CONNECT),
    "rpc/no-broker": case("-c", "{dead}", "rpc", "rpcutil", "ping", code=1, hint=CONNECT),
    "rpc/unknown-agent-no-broker": case("-c", "{dead}", "rpc", "nosuchagent", "go", code=1, hint=CONNECT),
    "facts/no-broker": case("-c", "{dead}", "facts", "role", code=1, hint=CONNECT),
    "inventory/no-broker": case("-c", "{dead}", "inventory", "node1.example.net", code=1, hint=CONNECT),
    "puppet-status/no-broker": case("-c", "{dead}", "puppet", "status", code=1, hint=CONNECT),
    "puppet-runonce/no-broker": case("-c", "{dead}", "puppet", "runonce", code=1, hint=CONNECT),
    "puppet-runall/no-broker": case("-c", "{dead}", "puppet", "runall", "2", code=1, hint=CONNECT),
    "puppet-summary/no-broker": case("-c", "{dead}", "puppet", "summary", code=1, hint=CONNECT),
    "puppet-enable/no-broker": case("-c", "{dead}", "puppet", "enable", code=1, hint=CONNECT),
    "puppet-disable/no-broker": case("-c", "{dead}", "puppet", "disable", code=1, hint=CONNECT),
    "audit-tail/no-broker": case("-c", "{dead}", "audit", "tail", code=1, hint=CONNECT, real=True),
    "audit-query/no-broker": case("-c", "{dead}", "audit", "query", code=1, hint=CONNECT),
    "audit-setup/no-broker": case("-c", "{dead}", "audit", "setup", code=1, hint=CONNECT),
    # --config names a file that is not there, or one that does not parse
    "ping/missing-config": case("-c", "{missing}", "ping", code=1, hint="given by --config or NMC_CONFIG",
                                real=True),
    "plugin-list/missing-config": case("-c", "{missing}", "plugin", "list", code=1, hint="config file not found"),
    "audit-tail/missing-config": case("-c", "{missing}", "audit", "tail", code=1, hint="config file not found"),
    "ping/broken-config": case("-c", "{broken}", "ping", code=1, hint="expected 'key = value'", real=True),
    "config-show/broken-config": case("config", "show", "--file", "{broken}", code=1,
                                      hint="expected 'key = value'"),
    "serve-node/broken-config": case("serve", "node", "--config", "{broken}", code=1,
                                     hint="expected 'key = value'", real=True),
    "serve-node/missing-config": case("serve", "node", "--config", "{missing}", code=1,
                                      hint="config file not found"),
    "serve-policy/broken-config": case("serve", "policy", "--config", "{broken}", code=1,
                                       hint="expected 'key = value'"),
    "serve-audit/broken-config": case("serve", "audit", "--config", "{broken}", code=1,
                                      hint="expected 'key = value'"),
    # a certificate path that is not there
    "ping/unreadable-cert": case("-c", "{badcert}", "ping", code=1, hint="file not found (set at", real=True),
    "facts/unreadable-cert": case("-c", "{badcert}", "facts", "role", code=1, hint="file not found (set at"),
    # bad filter syntax
    "find/bad-filter": case("-c", "{dead}", "find", "-S", "(((", code=USAGE, hint="bad filter", real=True),
    "ping/bad-filter": case("-c", "{dead}", "ping", "-S", "role=web and", code=USAGE, hint="bad filter"),
    "rpc/bad-filter": case("-c", "{dead}", "rpc", "rpcutil", "ping", "-S", "not", code=USAGE, hint="bad filter"),
    "facts/bad-filter": case("-c", "{dead}", "facts", "role", "-S", "(", code=USAGE, hint="bad filter"),
    "puppet-status/bad-filter": case("-c", "{dead}", "puppet", "status", "-S", ")", code=USAGE, hint="bad filter"),
    # unknown agent or action, missing input
    "rpc/unknown-action": case("-c", "{dead}", "rpc", "rpcutil", "nosuch", code=USAGE, hint="has no action",
                               real=True),
    "rpc/misspelt-agent": case("-c", "{dead}", "rpc", "rpcutill", "ping", code=USAGE,
                               hint="unknown agent 'rpcutill' (did you mean 'rpcutil'?); nothing was sent"),
    "plugin-ddl/unknown-agent": case("-c", "{dead}", "plugin", "ddl", "nosuch", code=USAGE, hint="unknown agent"),
    "rpc/missing-input": case("-c", "{dead}", "rpc", "rpcutil", "get_fact", code=USAGE,
                              hint="missing required input 'fact'"),
    "rpc/bad-input-word": case("-c", "{dead}", "rpc", "rpcutil", "get_fact", "role", code=USAGE,
                               hint="inputs are key=value"),
    "rpc/missing-agent": case("rpc", code=USAGE, hint="Missing argument 'AGENT'"),
    "inventory/missing-node": case("inventory", code=USAGE, hint="give a NODE"),
    "inventory/missing-script": case("-c", "{dead}", "inventory", "--script", "{root}/nope.toml", code=USAGE,
                                     hint="cannot read the script"),
    # CA directories
    "ca-init/dir-is-a-file": case("ops", "ca", "init", "--dir", "{file}", code=USAGE, hint="is a file",
                                  real=True),
    "ca-init/exists": case("ops", "ca", "init", "--dir", "{ca}", code=1, hint="use --force"),
    "ca-issue/no-ca": case("ops", "ca", "issue", "bob", "--dir", "{nodir}", code=1, hint="nmc ops ca init",
                           real=True),
    "ca-issue/bad-name": case("ops", "ca", "issue", "bad/name", "--dir", "{ca}", code=1, hint="no slashes"),
    "ca-show/no-ca": case("ops", "ca", "show", "--dir", "{nodir}", code=1, hint="nmc ops ca init"),
    "ca-show/unknown-name": case("ops", "ca", "show", "nobody", "--dir", "{ca}", code=1, hint="no certificate"),
    "ca-revoke/no-ca": case("ops", "ca", "revoke", "alice", "--dir", "{nodir}", code=1, hint="nmc ops ca init"),
    "ca-revoke/bad-serial": case("ops", "ca", "revoke", "alice", "--dir", "{ca}", "--serial", "zz", code=USAGE,
                                 hint="not a hexadecimal serial"),
    "ca-crl/no-ca": case("ops", "ca", "crl", "--dir", "{nodir}", code=1, hint="nmc ops ca init"),
    "broker-config/no-ca": case("ops", "broker", "config", "--ca-dir", "{nodir}", code=1, hint="nmc ops ca init"),
    "broker-config/json-without-output": case("ops", "broker", "config", "--ca-dir", "{ca}", "--json", code=USAGE,
                                              hint="needs -o FILE"),
    "broker-config/bad-role-pattern": case("ops", "broker", "config", "--ca-dir", "{ca}", "--role-pattern", "x",
                                           code=USAGE, hint="ROLE=GLOB"),
    "broker/tls-no-ca": case("ops", "broker", "--tls", "--ca-dir", "{nodir}", code=1, hint="nmc ops ca init"),
    "broker/remote-host": case("ops", "broker", "--host", "10.1.2.3", code=1, hint="--allow-remote"),
    # policies
    "policy-check/no-dir": case("policy", "check", "alice", "puppet", "runonce", code=2, hint="pass --dir",
                                real=True),
    "policy-check/missing-facts": case("policy", "check", "alice", "puppet", "runonce", "--dir", "{pol}",
                                       "--facts", "{facts}", code=2, hint="cannot read it"),
    "policy-check/bad-fact": case("policy", "check", "alice", "puppet", "runonce", "--dir", "{pol}",
                                  "--fact", "novalue", code=USAGE, hint="expected NAME=VALUE"),
    # invalid option values and unknown commands
    "ping/bad-timeout": case("ping", "--timeout", "-1", code=USAGE, hint="--timeout", real=True),
    "find/bad-limit": case("find", "--limit", "abc", code=USAGE, hint="--limit takes N or N%"),
    "rpc/bad-batch": case("-c", "{dead}", "rpc", "rpcutil", "ping", "--batch", "x", code=USAGE, hint="--batch"),
    "rpc/json-and-table": case("rpc", "rpcutil", "ping", "--json", "--table", code=USAGE, hint="cannot be combined"),
    "puppet-runall/zero": case("puppet", "runall", "0", code=USAGE, hint="x>=1"),
    "puppet-runonce/bad-tags": case("puppet", "runonce", "--tags", "bad tag!", code=USAGE, hint="--tags"),
    "audit-setup/bad-age": case("audit", "setup", "--max-age", "forever", code=USAGE, hint="--max-age"),
    "audit-query/bad-since": case("audit", "query", "--since", "someday", code=USAGE, hint="--since"),
    "config-show/unknown-key": case("config", "show", "no.such.key", code=1, hint="see `nmc config keys`",
                                    real=True),
    "config-keys/bad-option": case("config", "keys", "--nope", code=USAGE, hint="No such option"),
    "dev-up/zero-nodes": case("dev", "up", "--nodes", "0", code=USAGE, hint="--nodes"),
    "dev-up/dir-is-a-file": case("dev", "up", "--dir", "{file}", code=USAGE, hint="is a file"),
    "simulate/zero-nodes": case("ops", "simulate", "--nodes", "0", code=USAGE, hint="--nodes"),
    "simulate/zero-processes": case("ops", "simulate", "--nodes", "2", "--processes", "0", code=USAGE,
                                    hint="--processes"),
    "simulate-worker/last-before-first": case("ops", "simulate-worker", "--dir", "{root}", "--first", "5",
                                              "--last", "2", code=USAGE, hint="is before --first"),
    "nmc/unknown-command": case("pnig", code=USAGE, hint="No such command", real=True),
}


def _in_process(args: list[str], monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """main() as the console script runs it: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["nmc", *args])
    with pytest.raises(SystemExit) as ended:
        main()
    out, err = capsys.readouterr()
    code = ended.value.code
    return (code if isinstance(code, int) else (0 if code is None else 1)), out, err


def _child(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    done = subprocess.run([*NMC, *args], check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout, done.stderr


def _assert_one_line_error(name: str, c: Case, code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err, f"{name}: traceback:\n{err}"
    assert code == c.code, f"{name}: exit {code}, wanted {c.code}; stderr: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{name}: stderr is not one line:\n{err}"
    assert lines[0].startswith("Error: "), f"{name}: {lines[0]!r}"
    assert c.hint in lines[0], f"{name}: no {c.hint!r} in {lines[0]!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_failure_is_one_line_in_process(name: str, world: World, env: dict[str, str],
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    c = CASES[name]
    code, out, err = _in_process([world.fill(a) for a in c.args], monkeypatch, capsys)
    _assert_one_line_error(name, c, code, out, err)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.real])
def test_failure_is_one_line_from_the_real_command(name: str, world: World, env: dict[str, str]):
    c = CASES[name]
    code, out, err = _child([world.fill(a) for a in c.args], env, world.root)
    _assert_one_line_error(name, c, code, out, err)


def test_usage_error_names_the_command_help(world: World, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]):
    code, out, err = _in_process(["-c", world.fill("{dead}"), "find", "-S", "((("], monkeypatch, capsys)
    assert (code, out) == (USAGE, "")
    assert err == "Error: bad filter: column 4: expected a term after '(' (in: ((() (see `nmc find --help`)\n"


def test_debug_shows_the_traceback(world: World, env: dict[str, str]):
    code, _, err = _child(["--debug", "-c", world.fill("{broken}"), "ping"], env, world.root)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "ConfigError" in err


def test_policy_lint_reports_problems_as_file_and_line(world: World, env: dict[str, str],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]):
    # lint's documented format: the problems on stdout as file:line, exit 1; nothing on stderr
    code, out, err = _in_process(["policy", "lint", world.fill("{pol}")], monkeypatch, capsys)
    assert (code, err) == (1, "")
    assert out.splitlines()[0].startswith("default.policy:1: error: ")


def test_policy_check_with_a_broken_policy_denies_and_points_at_lint(world: World, env: dict[str, str]):
    # check's documented format: the decision on stdout (fail closed), one line on stderr naming `policy lint`
    code, out, err = _child(["policy", "check", "alice", "puppet", "runonce", "--dir", world.fill("{pol}")],
                            env, world.root)
    assert code == 1 and out.startswith("DENIED: cert=alice puppet.runonce")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "see `nmc policy lint" in err
