"""docs/quickstart.md, followed as a newcomer would: `nmc dev up` in one shell, the tour in another.

The fleet runs as a real `nmc dev up` process with HOME pointing at a fresh directory and no
NMC_CONFIG, so the tour's commands find the client config exactly as the guide says. The tour's
commands are read from the guide itself and run through bash, in order, as written; each one's
exit status and the lines its sketch in the guide shows (those that do not vary from run to run)
are checked against what it really printed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.docs.doccommands import ROOT, code_blocks
from tests.tools import have_tool

QUICKSTART = ROOT / "docs" / "quickstart.md"
TOUR = [
    "nmc ping",
    "nmc facts role",
    "nmc inventory node1.example.net",
    "nmc rpc rpcutil get_fact fact=role -F role=db",
    "nmc puppet runall 2",
    "nmc audit tail -n 5",
    "nmc policy check admin puppet runonce --dir ~/.local/state/nmc/dev/policy/policies",
    "nmc policy check alice puppet runonce --dir ~/.local/state/nmc/dev/policy/policies",
]
NODES = [f"node{i}.example.net" for i in range(1, 6)]


def _words(line: str) -> str:
    return " ".join(line.split())


def tour_sessions() -> dict[str, list[str]]:
    """Section 2's `$ command` lines and the output the guide shows under each."""
    text = QUICKSTART.read_text(encoding="utf-8")
    start, end = text.index("## 2."), text.index("## 3.")
    first, last = text[:start].count("\n") + 1, text[:end].count("\n") + 1
    sessions: dict[str, list[str]] = {}
    for _, body in code_blocks(QUICKSTART):
        if not body or not first <= body[0][0] <= last:
            continue
        command = None
        for _, line in body:
            if line.startswith("$ "):
                command = line[2:].strip()
                sessions[command] = []
            elif command is not None:
                sessions[command].append(line)
    return sessions


def shows(command: str, sessions: dict[str, list[str]], lines: list[str]) -> None:
    """`lines` (whitespace-normalised) are in the guide's sketch of `command`: the test checks what the guide shows."""
    sketch = {_words(ln) for ln in sessions[command]}
    missing = [ln for ln in lines if _words(ln) not in sketch]
    assert not missing, f"docs/quickstart.md no longer shows {missing} for {command!r}"


def has_lines(output: str, lines: list[str]) -> None:
    got = {_words(ln) for ln in output.splitlines()}
    missing = [ln for ln in lines if _words(ln) not in got]
    assert not missing, f"missing {missing} in:\n{output}"


@pytest.fixture
def newcomer(tmp_path: Path):
    """A fresh HOME with `nmc` on PATH, and `nmc dev up --nodes 5` running in it; yields the shell env."""
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    wrapper = home / "bin" / "nmc"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m nmc "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NMC_", "XDG_"))}
    env.update(HOME=str(home), PATH=f"{home / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
               NMC_ETC_DIR=str(tmp_path / "etc-nmc"))  # a machine's real /etc/nmc/client.cfg would come first
    # The guide's command, on a free port (--port 0) so it never meets another broker on 4222.
    fleet = subprocess.Popen(["bash", "-c", "exec nmc dev up --nodes 5 --port 0"], cwd=home, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert fleet.stdout is not None
    banner: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = fleet.stdout.readline()
        if not line:
            break
        banner.append(line)
        if line.startswith("Press Ctrl-C to stop the fleet."):
            break
    try:
        assert banner and banner[-1].startswith("Press Ctrl-C"), "".join(banner)
        yield env, "".join(banner)
    finally:
        fleet.send_signal(signal.SIGINT)
        try:
            rest, _ = fleet.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            fleet.kill()
            rest, _ = fleet.communicate()
    assert fleet.returncode == 0 and "dev fleet stopped" in rest, rest


def run(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    """One line typed into the second shell."""
    return subprocess.run(["bash", "-c", command], cwd=env["HOME"], env=env, check=False, capture_output=True, text=True,
                          timeout=180)


def test_the_guide_tours_these_commands() -> None:
    assert list(tour_sessions()) == TOUR


def test_quickstart_tour(newcomer) -> None:
    env, banner = newcomer
    sessions = tour_sessions()
    home = env["HOME"]
    assert f"client config: {home}/.local/state/nmc/dev/client.cfg" in banner
    assert f"5 nodes ({', '.join(NODES)})" in banner
    shows(TOUR[0], sessions, ["---- ping statistics ----"])

    ping = run(env, TOUR[0])
    assert ping.returncode == 0, ping.stderr
    assert sorted(ln.split()[0] for ln in ping.stdout.splitlines() if "time=" in ln) == NODES
    has_lines(ping.stdout, ["---- ping statistics ----"])
    assert re.search(r"^5 replies max: [\d.]+ min: [\d.]+ avg: [\d.]+$", ping.stdout, re.MULTILINE), ping.stdout

    facts = run(env, TOUR[1])
    stable = ["Report for fact: role", "cache found 1 times", "db found 2 times", "web found 2 times"]
    shows(TOUR[1], sessions, stable)
    assert facts.returncode == 0, facts.stderr
    has_lines(facts.stdout, stable)
    assert "Finished processing 5 / 5 hosts in" in facts.stdout

    inventory = run(env, TOUR[2])
    stable = ["Inventory for node1.example.net:", "Server Statistics:", "Collectives: nmc", "Agents:",
              "package puppet rpcutil", "service shell", "Configuration Management Classes:",
              "base nginx role::web", "Facts:", "country => us", "customer => acme", "role => web"]
    shows(TOUR[2], sessions, stable)
    assert inventory.returncode == 0, inventory.stderr
    has_lines(inventory.stdout, stable)

    rpc = run(env, TOUR[3])
    stable = ["node3.example.net", "node4.example.net", "fact: role", "value: db", "Summary",
              "Nodes: 2 discovered, 2 replied, 2 ok, 0 failed"]
    shows(TOUR[3], sessions, stable)
    assert rpc.returncode == 0, rpc.stderr
    has_lines(rpc.stdout, stable)
    assert "Finished processing 2 / 2 hosts in" in rpc.stdout
    assert "node1.example.net" not in rpc.stdout

    runall = run(env, TOUR[4])
    have_puppet = have_tool("puppet")  # both branches are the guide's; CI has puppet (tests/tools.py)
    if have_puppet:
        stable = ["Running Puppet on 5 node(s), at most 2 at once",
                  "Nodes: 5 targeted, 5 ok, 0 failed, 0 not started, 0 timed out, 0 no response",
                  "Most applying at once: 2 (limit 2)"]
        shows(TOUR[4], sessions, stable)
        assert runall.returncode == 0, runall.stdout + runall.stderr
        has_lines(runall.stdout, stable)
        for node in NODES:
            assert re.search(rf"^\[ *[\d.]+s\] {re.escape(node)}: finished: 1 resource\(s\) changed \(\d applying\)$",
                             runall.stdout, re.MULTILINE), runall.stdout
        assert "Finished 5 Puppet run(s) in" in runall.stdout
    else:  # the guide's one-line explanation for machines without Puppet
        assert runall.returncode == 1
        missing = "`puppet` command not found on this node: install Puppet (Debian, Ubuntu: apt-get install puppet)"
        assert runall.stdout.count(missing) == 5, runall.stdout  # once per node
        assert f"  Not started: {', '.join(NODES)}" in runall.stdout.splitlines()
        assert missing in _words(QUICKSTART.read_text()), "the guide no longer quotes the message"
    # Events and the closing total are on one clock: no event later than the total (the guide's sample too).
    for text in (runall.stdout, "\n".join(sessions[TOUR[4]])):
        stamps = [float(s) for s in re.findall(r"^\[ *([\d.]+)s\] ", text, re.MULTILINE)]
        total = re.search(r"^Finished 5 Puppet run\(s\) in ([\d.]+) s$", text, re.MULTILINE)
        assert stamps and total and max(stamps) <= float(total.group(1)), text

    tail = run(env, TOUR[5])
    assert tail.returncode == 0, tail.stderr
    records = tail.stdout.splitlines()
    assert len(records) == 5, tail.stdout
    # The last records are runall's status polls, possibly after the last node's runonce result
    # (how many polls follow it depends on timing).
    # Without Puppet the last records are the five runonce attempts: status 5, puppet could not start.
    ok = "status 0" if have_puppet else "status [05]"
    record = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z node\d\.example\.net (decision|result) +cert=admin "
                        rf"puppet\.(status|runonce) (allowed|{ok}) .*req=[0-9a-f]{{32}}( \{{.*\}})?$")
    assert all(record.match(ln) for ln in records), tail.stdout
    assert all(record.match(ln) for ln in sessions[TOUR[5]] if ln.strip()), sessions[TOUR[5]]
    # Every request is recorded by each node as a decision, then a result; runall's last requests
    # go to one or two nodes, so the newest five records mix both, and so does the guide's sample.
    assert {record.match(ln).group(1) for ln in records} == {"decision", "result"}, tail.stdout
    assert {record.match(ln).group(1) for ln in sessions[TOUR[5]] if ln.strip()} == {"decision", "result"}

    for command, status in ((TOUR[6], 0), (TOUR[7], 1)):
        check = run(env, command)
        assert check.returncode == status, check.stdout + check.stderr
        # Policy decisions do not vary: the guide shows exactly what the command prints.
        assert check.stdout.splitlines() == sessions[command], check.stdout
