"""`nmc facts` and `nmc inventory` as real processes against real nodes: what an operator sees."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nmc import __version__
from nmc.ops import pki
from nmc.ops.broker.server import Broker, free_port
from nmc.services.agents import BUILTIN_AGENTS

NMC = [sys.executable, "-m", "nmc"]
CENTOS = "CentOS release 5.5 (Final)"
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}"
FINISHED = re.compile(r"^Finished processing (\d+) / (\d+) hosts in \d+\.\d\d ms$")


def nmc(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NMC, *args], check=False, capture_output=True, text=True, env=env, timeout=60)


def _drain(stream) -> None:
    """Keep reading a child's output so a full pipe never blocks it."""
    for _ in stream:
        pass


def _start(cmd: list[str], env: dict, ready: str) -> subprocess.Popen:
    """Start a process and return once it printed `ready` (its own signal, not a sleep)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if ready in line:
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            return proc
    proc.kill()
    raise AssertionError(f"{cmd} never said {ready!r}:\n{''.join(lines)}")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def dev_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`nmc dev up --nodes 5` as a subprocess, shared by this module's read-only tests."""
    tmp = tmp_path_factory.mktemp("reports")
    env = {**os.environ, "NMC_CONFIG": str(tmp / "dev" / "client.cfg"), "HOME": str(tmp)}
    proc = _start([*NMC, "dev", "up", "--nodes", "5", "--dir", str(tmp / "dev"), "--port", "0"], env,
                  "Press Ctrl-C")
    yield env
    _stop(proc)
    assert proc.returncode == 0


def _write_cfg(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()), encoding="utf-8")


@pytest.fixture
def centos_env(nats_server: Broker, tmp_path: Path) -> Iterator[dict]:
    """Three `nmc serve node` daemons whose YAML facts carry lsbdistdescription (foobar3 lacks it)."""
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    client = pki.issue(ca, "admin", roles=("user",))
    common = {"main_collective": "nmc", "plugin.nats.servers": nats_server.url,
              "plugin.security.ca_file": str(ca / "ca.pem")}
    _write_cfg(tmp_path / "client.cfg", {**common, "plugin.security.cert_file": str(client.certificate),
                                         "plugin.security.key_file": str(client.key)})
    env = {**os.environ, "NMC_CONFIG": str(tmp_path / "client.cfg"), "HOME": str(tmp_path)}
    procs = []
    try:
        for i, facts in enumerate([{"lsbdistdescription": CENTOS, "customer": "acme"},
                                   {"lsbdistdescription": CENTOS, "customer": "globex"},
                                   {"customer": "acme"}], 1):
            identity = f"foobar{i}.example.com"
            issued = pki.issue(ca, identity, roles=("node",))
            ndir = tmp_path / identity
            _write_cfg(ndir / "server.cfg", {**common, "identity": identity, "plugin.yaml": "facts.yaml",
                                              "plugin.security.cert_file": str(issued.certificate),
                                              "plugin.security.key_file": str(issued.key)})
            (ndir / "facts.yaml").write_text(yaml.safe_dump(facts), encoding="utf-8")
            procs.append(_start([*NMC, "serve", "node", "--config", str(ndir / "server.cfg"),
                                 "--log-format", "json"], env, "node_started"))
        yield env
    finally:
        for proc in procs:
            _stop(proc)


def report_rows(stdout: str) -> dict[str, int]:
    """`value -> count` from the `found N times` lines of `nmc facts`."""
    rows = {}
    for line in stdout.splitlines():
        m = re.fullmatch(r" {8}(.+?) +found (\d+) times", line)
        if m:
            rows[m.group(1)] = int(m.group(2))
    return rows


# ---- nmc facts ------------------------------------------------------------------------------------------------


def test_facts_counts_each_value_in_mcollective_layout(dev_env):
    out = nmc(dev_env, "facts", "country")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:7] == [
        "Report for fact: country",
        "",
        "        de                                       found 1 times",
        "        fr                                       found 1 times",
        "        uk                                       found 1 times",
        "        us                                       found 2 times",
        "",
    ]
    assert FINISHED.match(lines[7]).groups() == ("5", "5")
    assert len(lines) == 8


def test_facts_verbose_lists_identities_under_each_value(dev_env):
    out = nmc(dev_env, "facts", "role", "-v", "-F", "dc=east")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:-1] == [
        "Report for fact: role", "",
        "        cache                                    found 1 times", "",
        "            node5.example.net", "",
        "        db                                       found 1 times", "",
        "            node3.example.net", "",
        "        web                                      found 1 times", "",
        "            node1.example.net", "",
    ]
    assert FINISHED.match(lines[-1]).groups() == ("3", "3")


def test_facts_sorts_numbers_numerically_and_follows_dotted_paths(dev_env):
    release = nmc(dev_env, "facts", "os.release.full")
    assert list(report_rows(release.stdout).items()) == [("9.3", 1), ("12", 2), ("22.04", 2)]
    family = nmc(dev_env, "facts", "os.family")
    assert report_rows(family.stdout) == {"Debian": 4, "RedHat": 1}


def test_facts_shows_structured_values_as_compact_json(dev_env):
    out = nmc(dev_env, "facts", "os")
    assert report_rows(out.stdout) == {
        '{"family":"Debian","name":"Debian","release":{"full":"12","major":"12"}}': 2,
        '{"family":"Debian","name":"Ubuntu","release":{"full":"22.04","major":"22"}}': 2,
        '{"family":"RedHat","name":"Rocky","release":{"full":"9.3","major":"9"}}': 1,
    }


def test_facts_json_shape(dev_env):
    out = nmc(dev_env, "facts", "country", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "fact": "country",
        "values": [
            {"value": "de", "count": 1, "nodes": ["node2.example.net"]},
            {"value": "fr", "count": 1, "nodes": ["node5.example.net"]},
            {"value": "uk", "count": 1, "nodes": ["node3.example.net"]},
            {"value": "us", "count": 2, "nodes": ["node1.example.net", "node4.example.net"]},
        ],
        "missing": [], "failed": [], "no_response": [],
    }
    structured = json.loads(nmc(dev_env, "facts", "os.release", "--json", "-F", "country=us").stdout)
    assert structured["values"] == [{"value": {"full": "12", "major": "12"}, "count": 2,
                                     "nodes": ["node1.example.net", "node4.example.net"]}]


def test_facts_counts_nodes_without_the_fact_as_missing(dev_env):
    out = nmc(dev_env, "facts", "nosuchfact", "-v")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:10] == [
        "Report for fact: nosuchfact", "",
        "        (missing)                                found 5 times", "",
        *(f"            node{i}.example.net" for i in range(1, 6)), "",
    ]
    data = json.loads(nmc(dev_env, "facts", "nosuchfact", "--json").stdout)
    assert data["values"] == [] and data["missing"] == [f"node{i}.example.net" for i in range(1, 6)]


def test_facts_with_no_matching_node_and_bad_fact_name(dev_env):
    nobody = nmc(dev_env, "facts", "country", "-F", "country=nowhere")
    assert nobody.returncode == 2 and nobody.stderr.strip() == "No request sent, we did not discover any nodes."
    bad = nmc(dev_env, "facts", "no such")
    assert bad.returncode == 4 and "nothing was sent" in bad.stderr and "Traceback" not in bad.stderr


def test_find_with_no_matching_node_says_so_like_the_other_commands(dev_env):
    nobody = nmc(dev_env, "find", "-F", "country=zz")
    assert (nobody.returncode, nobody.stdout) == (2, "")  # no empty line where identities would be
    assert nobody.stderr == "We did not discover any nodes.\n"
    as_json = nmc(dev_env, "find", "-F", "country=zz", "--json")
    assert (as_json.returncode, json.loads(as_json.stdout), as_json.stderr) == (2, [], "")
    found = nmc(dev_env, "find", "-F", "country=us")
    assert found.returncode == 0 and found.stdout.splitlines() == sorted(found.stdout.splitlines())
    assert found.stdout.splitlines() and found.stderr == ""


# ---- nmc inventory NODE ---------------------------------------------------------------------------------------


def test_inventory_of_one_node_in_mcollective_layout(dev_env):
    out = nmc(dev_env, "inventory", "node2.example.net")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:4] == ["Inventory for node2.example.net:", "", "   Server Statistics:",
                         f"                      Version: {__version__}"]
    assert re.fullmatch(f"                   Start Time: {TIME}", lines[4])
    assert lines[5:7] == ["                  Collectives: nmc", "              Main Collective: nmc"]
    assert [ln.split(":")[0] for ln in lines[7:12]] == [
        "               Total Messages", "      Messages Passed Filters", "            Messages Filtered",
        "             Expired Messages", "                 Replies Sent"]
    assert all(re.fullmatch(r".*: \d+", ln) for ln in lines[7:12])
    assert lines[12:14] == ["", "   Agents:"]
    classes_at = lines.index("   Configuration Management Classes:")
    agents = sorted(cls.name for cls in BUILTIN_AGENTS)  # three to a row, as mco prints them
    assert lines[14:classes_at - 1] == ["      " + " ".join(f"{a:<15}" for a in agents[i:i + 3]).rstrip()
                                        for i in range(0, len(agents), 3)]
    assert lines[classes_at - 1:classes_at + 2] == ["", "   Configuration Management Classes:",
                                                    "      " + "base".ljust(31) + "nginx".ljust(31) + "role::web"]
    facts = lines[lines.index("   Facts:") + 1:]
    assert "      country => de" in facts and "      role => web" in facts
    assert ('      os => {"family":"Debian","name":"Ubuntu","release":{"full":"22.04","major":"22"}}' in facts)
    assert facts == sorted(facts)
    assert "Config File" not in out.stdout and "Process ID" not in out.stdout


def test_inventory_json_is_the_rpcutil_data(dev_env):
    out = nmc(dev_env, "inventory", "node3.example.net", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"agents", "facts", "classes", "version", "main_collective", "collectives", "uptime",
                         "stats"}
    assert data["facts"]["country"] == "uk" and data["classes"] == ["role::db", "postgresql", "base"]
    assert set(data["stats"]) >= {"total", "passed", "filtered", "replies", "ttlexpired"}


def test_inventory_of_an_unknown_node_is_one_line_exit_2(dev_env):
    out = nmc(dev_env, "inventory", "nosuch.example.net")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["Error: no response from nosuch.example.net"]
    assert out.stdout == ""


def test_inventory_usage_errors(dev_env):
    neither = nmc(dev_env, "inventory")
    assert neither.returncode == 4 and "give a NODE, or --script FILE" in neither.stderr
    mixed = nmc(dev_env, "inventory", "node1.example.net", "-F", "role=web")
    assert mixed.returncode == 4 and "filter and discovery flags go with --script" in mixed.stderr


# ---- nmc inventory --script -----------------------------------------------------------------------------------

MCO_SCRIPT = 'format = "%s:\\t\\t\\t%s"\nfields = ["identity", \'facts["lsbdistdescription"]\']\n'


def test_script_reproduces_mcollective_sample_output(centos_env, tmp_path):
    script = tmp_path / "inventory.toml"
    script.write_text(MCO_SCRIPT, encoding="utf-8")
    out = nmc(centos_env, "inventory", "--script", str(script))
    assert out.returncode == 0, out.stderr
    assert out.stdout == ("foobar1.example.com:\t\t\tCentOS release 5.5 (Final)\n"
                          "foobar2.example.com:\t\t\tCentOS release 5.5 (Final)\n"
                          "foobar3.example.com:\t\t\t\n")
    one = nmc(centos_env, "inventory", "--script", str(script), "-I", "foobar2.example.com")
    assert one.stdout == "foobar2.example.com:\t\t\tCentOS release 5.5 (Final)\n"


def test_facts_mixes_values_and_missing(centos_env):
    out = nmc(centos_env, "facts", "lsbdistdescription", "-v")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:10] == [
        "Report for fact: lsbdistdescription", "",
        "        CentOS release 5.5 (Final)               found 2 times", "",
        "            foobar1.example.com", "            foobar2.example.com", "",
        "        (missing)                                found 1 times", "",
        "            foobar3.example.com",
    ]


PAGED = '''
[page]
length = 2
heading = """
Node Report {time}
Hostname:         Customer:     Distribution:
-------------------------------------------------------------------------"""
body = "{0:<17} {1:<13} {2}"
fields = ["identity", 'facts["customer"]', "facts.os.family"]
'''


def test_paged_script_prints_the_heading_every_length_lines(dev_env, tmp_path):
    script = tmp_path / "paged.toml"
    script.write_text(PAGED, encoding="utf-8")
    out = nmc(dev_env, "inventory", "--script", str(script), "-F", "dc=east")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    heading = ["Hostname:         Customer:     Distribution:", "-" * 73]
    assert re.fullmatch(f"Node Report {TIME}", lines[0]) and re.fullmatch(f"Node Report {TIME}", lines[5])
    assert lines[1:5] == [*heading, "node1.example.net acme          Debian", "node3.example.net acme          RedHat"]
    assert lines[6:] == [*heading, "node5.example.net acme          Debian"]

    data = json.loads(nmc(dev_env, "inventory", "--script", str(script), "-F", "dc=east", "--json").stdout)
    assert data["lines"][3:5] == lines[3:5]
    assert data["rows"][0] == {"identity": "node1.example.net", "values": ["node1.example.net", "acme", "Debian"]}
    assert [r["identity"] for r in data["rows"]] == ["node1.example.net", "node3.example.net", "node5.example.net"]
    assert data["no_response"] == [] and data["failed"] == []


@pytest.mark.parametrize(("text", "message"), [
    ('format = "%s\nfields = [', "TOML syntax: "),
    ('format = "%s"\nfields = ["fact.country"]', "unknown field 'fact' in 'fact.country'"),
    ('format = "%s %s %s"\nfields = ["identity", "facts.country"]', "format takes 3 value(s) but fields lists 2"),
    ('inventory do\n  format "%s"\n  fields { [ identity ] }\nend\n',
     "this is MCollective's Ruby inventory.mc DSL (line 1: `inventory do`), which nmc does not run; nmc scripts are "
     "TOML, e.g. format = \"%s\" and fields = [\"identity\"]: see docs/inventory.md"),
])
def test_script_errors_are_one_line_and_nothing_is_sent(tmp_path, text, message):
    script = tmp_path / "broken.toml"
    script.write_text(text, encoding="utf-8")
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    issued = pki.issue(ca, "alice")
    # No broker listens here: a script error must come before any attempt to connect.
    _write_cfg(tmp_path / "client.cfg", {"plugin.nats.servers": f"nats://127.0.0.1:{free_port()}",
                                         "plugin.security.ca_file": str(ca / "ca.pem"),
                                         "plugin.security.cert_file": str(issued.certificate),
                                         "plugin.security.key_file": str(issued.key)})
    out = nmc({**os.environ, "NMC_CONFIG": str(tmp_path / "client.cfg")}, "inventory", "--script", str(script))
    assert out.returncode == 4
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {script}: ")
    assert message in out.stderr and "cannot connect" not in out.stderr and "Traceback" not in out.stderr
