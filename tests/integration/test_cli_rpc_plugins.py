"""`nmc rpc` with a plugin agent, as a real process against real nodes: typed inputs, --display,
--json/--jsonl/--table, aggregate summaries, exit codes; `nmc plugin`; `nmc serve node` with a plugindir.

The nodes run in the test's event loop (fleet fixture) with the agents loaded from the same plugin
directory the client's client.cfg names, so the CLI runs as a subprocess awaited without blocking them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nmc.ops import pki
from nmc.protocol.ddl import Input
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.agents.rpcutil import RpcUtil
from nmc.services.loader import load_agents

NMC = [sys.executable, "-m", "nmc"]
PLUGINS = Path(__file__).parent / "plugins"


class Secret(Agent):
    """Only the nodes have this agent: the client sends its inputs as strings and the node validates."""

    name = "secret"

    @action("needs a number", inputs=(Input("count", "integer", optional=False),))
    async def count(self, req: ActionRequest) -> Mapping[str, Any]:
        return {"count": req.data["count"]}


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def nmc(env: dict[str, str], *args: str) -> Ran:
    """Run the CLI without blocking the event loop the nodes answer from."""
    proc = await asyncio.create_subprocess_exec(*NMC, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def _write_cfg(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()), encoding="utf-8")


def client_env(tmp_path: Path, url: str, ca_dir: Path, plugindir: Path | None = PLUGINS) -> dict[str, str]:
    issued = pki.issued_paths(ca_dir, "alice")
    if not issued.certificate.exists():
        pki.issue(ca_dir, "alice")
    values = {"main_collective": "nmc", "plugin.nats.servers": url, "plugin.security.ca_file": str(ca_dir / "ca.pem"),
              "plugin.security.cert_file": str(issued.certificate), "plugin.security.key_file": str(issued.key)}
    if plugindir is not None:
        values["plugindir"] = str(plugindir)
    _write_cfg(tmp_path / "client.cfg", values)
    # No NMC_* from the test's environment, except the state directory of this test run (tests/conftest.py).
    env = {k: v for k, v in os.environ.items() if not k.startswith("NMC_") or k == "NMC_STATE_DIR"}
    return {**env, "NMC_CONFIG": str(tmp_path / "client.cfg"), "HOME": str(tmp_path)}


@pytest.fixture
async def hello_fleet(fleet, tmp_path: Path):
    """Three nodes with the hello plugin (and a node-only agent); n2 is unhealthy, n3 has no facts."""
    agents = [*(a.cls for a in load_agents([PLUGINS], builtins=(RpcUtil,))), Secret]
    await fleet.add("n1.test", {"role": "web", "cores": 8, "is_virtual": True}, agents=agents)
    await fleet.add("n2.test", {"role": "web", "cores": 4, "is_virtual": False, "healthy": False}, agents=agents)
    await fleet.add("n3.test", {}, agents=agents)
    return fleet, client_env(tmp_path, fleet.url, fleet.ca.directory)


GREET_TEXT = """\
n1.test
    Greeting: hello ann
        Role: web
   CPU cores: 8
     Virtual: True

n2.test
    Greeting: hello ann
        Role: web
   CPU cores: 4
     Virtual: False

n3.test
    Greeting: hello ann
        Role: unknown
   CPU cores: 0
     Virtual: False

Summary of Role:

       web = 2
   unknown = 1

Sum of CPU cores: 12

Average of CPU cores: 4.0

Summary of Virtual:

    virtual = 1
   physical = 2

Summary
  Nodes: 3 discovered, 3 replied, 3 ok, 0 failed
"""


async def test_text_output_uses_display_as_defaults_and_prints_aggregates(hello_fleet) -> None:
    _, env = hello_fleet
    ran = await nmc(env, "rpc", "hello", "greet", "person=ann")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(GREET_TEXT), ran.stdout
    assert ran.stdout.splitlines()[-1].startswith("Finished processing 3 / 3 hosts in ")


async def test_inputs_are_typed_from_the_ddl(hello_fleet) -> None:
    _, env = hello_fleet
    ran = await nmc(env, "rpc", "hello", "greet", "person=bo", "times=2", "shout=yes", "-I", "n1.test", "--json")
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert [r["data"]["greeting"] for r in out["replies"]] == ["HELLO BO HELLO BO"]


async def test_display_policy_from_the_ddl_and_the_flag(hello_fleet) -> None:
    _, env = hello_fleet
    # check's DDL says display="failed": only the node that failed is shown; the summary always is.
    failed = await nmc(env, "rpc", "hello", "check")
    assert failed.returncode == 1
    blocks = [ln for ln in failed.stdout.splitlines() if ln.startswith("n")]
    assert blocks == ["n2.test  Aborted: node says it is unhealthy"]
    assert "   Healthy: False" in failed.stdout
    assert "  Nodes: 3 discovered, 3 replied, 2 ok, 1 failed" in failed.stdout

    shown_all = await nmc(env, "rpc", "hello", "check", "--display", "all")
    assert [ln for ln in shown_all.stdout.splitlines() if ln.startswith("n")] == [
        "n1.test", "n2.test  Aborted: node says it is unhealthy", "n3.test"]
    ok_only = await nmc(env, "rpc", "hello", "check", "--display", "ok")
    assert [ln for ln in ok_only.stdout.splitlines() if ln.startswith("n")] == ["n1.test", "n3.test"]
    assert ok_only.returncode == 1  # what is shown does not change what happened

    none = await nmc(env, "rpc", "hello", "greet", "person=ann", "--display", "none")
    assert none.returncode == 0
    assert none.stdout.startswith("Summary of Role:\n"), none.stdout
    assert "Greeting" not in none.stdout and "Finished processing 3 / 3" in none.stdout


async def test_json_has_aggregates(hello_fleet) -> None:
    _, env = hello_fleet
    ran = await nmc(env, "rpc", "hello", "greet", "person=ann", "--json")
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert [r["sender"] for r in out["replies"]] == ["n1.test", "n2.test", "n3.test"]
    assert out["replies"][2]["data"] == {"greeting": "hello ann", "role": "unknown", "cores": 0, "virtual": False}
    assert out["aggregates"] == [
        {"function": "summary", "output": "role", "label": "Role", "value": {"web": 2, "unknown": 1}, "count": 3},
        {"function": "sum", "output": "cores", "label": "CPU cores", "value": 12, "count": 3},
        {"function": "average", "output": "cores", "label": "CPU cores", "value": 4.0, "count": 3},
        {"function": "boolean_summary", "output": "virtual", "label": "Virtual",
         "value": {"virtual": 1, "physical": 2}, "count": 3},
    ]
    assert out["summary"]["ok"] == 3


async def test_jsonl_is_one_reply_per_line_then_the_summary(hello_fleet) -> None:
    _, env = hello_fleet
    ran = await nmc(env, "rpc", "hello", "check", "--jsonl")
    assert ran.returncode == 1
    lines = [json.loads(ln) for ln in ran.stdout.splitlines()]
    assert [(ln["sender"], ln["statuscode"]) for ln in lines[:-1]] == [("n1.test", 0), ("n2.test", 1), ("n3.test", 0)]
    assert lines[1]["statusmsg"] == "node says it is unhealthy" and lines[1]["data"] == {"healthy": False}
    last = lines[-1]
    assert set(last) == {"summary", "no_response", "aggregates"}
    assert (last["summary"]["replies"], last["summary"]["failed"], last["no_response"]) == (3, 1, [])

    failed_only = await nmc(env, "rpc", "hello", "check", "--jsonl", "--display", "failed")
    assert [json.loads(ln).get("sender") for ln in failed_only.stdout.splitlines()] == ["n2.test", None]


async def test_table_has_a_row_per_node_and_a_column_per_output(hello_fleet) -> None:
    _, env = hello_fleet
    ran = await nmc(env, "rpc", "hello", "greet", "person=ann", "--table")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[:4] == [
        "identity  status  Greeting   Role     CPU cores  Virtual",
        "n1.test   OK      hello ann  web      8          True",
        "n2.test   OK      hello ann  web      4          False",
        "n3.test   OK      hello ann  unknown  0          False",
    ]
    assert "Summary of Role:" in ran.stdout and "Sum of CPU cores: 12" in ran.stdout

    # An action without declared outputs: the columns are the data keys the replies had.
    unknown = await nmc(env, "rpc", "rpcutil", "get_fact", "fact=role", "--table")
    assert unknown.returncode == 1
    assert unknown.stdout.splitlines()[:4] == [
        "identity  status                         fact  value",
        "n1.test   OK                             role  web",
        "n2.test   OK                             role  web",
        "n3.test   Aborted: no fact named 'role'  role",
    ]


@pytest.mark.parametrize(("args", "message"), [
    (["person=bob;reboot"], "input 'person' must not contain ';' (shellsafe) (nothing was sent)"),
    (["person=bob", "times=two"], "input 'times' must be of type integer, got 'two' (nothing was sent)"),
    ([], "missing required input 'person' (nothing was sent)"),
    (["person=bob", "volume=11"], "unknown input(s) for greet: volume (nothing was sent)"),
])
async def test_client_side_validation_is_a_usage_error_and_sends_nothing(hello_fleet, args: list[str],
                                                                         message: str) -> None:
    fleet, env = hello_fleet
    before = [n.pipeline.counters.total for n in fleet.nodes]
    ran = await nmc(env, "rpc", "hello", "greet", *args)
    assert ran.returncode == 4
    assert ran.stderr.strip().splitlines() == [f"Error: {message} (see `nmc rpc --help`)"]
    assert [n.pipeline.counters.total for n in fleet.nodes] == before  # not even discovery was sent


async def test_output_flags_and_actions_are_checked(hello_fleet) -> None:
    _, env = hello_fleet
    both = await nmc(env, "rpc", "hello", "greet", "person=a", "--json", "--table")
    assert both.returncode == 4 and "--json, --jsonl and --table cannot be combined" in both.stderr
    nope = await nmc(env, "rpc", "hello", "wave")
    assert nope.returncode == 4
    assert "agent 'hello' has no action 'wave' (actions: check, greet); nothing was sent" in nope.stderr
    bad_display = await nmc(env, "rpc", "hello", "check", "--display", "some")
    assert bad_display.returncode == 4


@pytest.mark.parametrize(("args", "message"), [
    (["rpcutill", "ping"], "unknown agent 'rpcutill' (did you mean 'rpcutil'?); nothing was sent"),
    (["helo", "greet", "person=ann"], "unknown agent 'helo' (did you mean 'hello'?); nothing was sent"),
    (["hello", "gret", "person=ann"],
     "agent 'hello' has no action 'gret' (did you mean 'greet'? actions: check, greet); nothing was sent"),
    (["rpcutil", "pnig"], "agent 'rpcutil' has no action 'pnig' (did you mean 'ping'? actions: agent_inventory, "
                          "daemon_stats, get_fact, inventory, ping); nothing was sent"),
])
async def test_a_misspelt_agent_or_action_is_a_usage_error_and_sends_nothing(hello_fleet, args: list[str],
                                                                             message: str) -> None:
    fleet, env = hello_fleet
    before = [n.pipeline.counters.total for n in fleet.nodes]
    ran = await nmc(env, "rpc", *args)
    assert (ran.returncode, ran.stdout) == (4, "")
    assert ran.stderr.strip().splitlines() == [f"Error: {message} (see `nmc rpc --help`)"]
    assert [n.pipeline.counters.total for n in fleet.nodes] == before  # not even discovery was sent


async def test_an_agent_no_node_serves_is_said_so_not_reported_as_silent_nodes(hello_fleet) -> None:
    fleet, env = hello_fleet
    # Not close to any agent the client knows: it may be someone else's plugin, so it is sent.
    ran = await nmc(env, "rpc", "frobnicator", "go")
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "  No node serves agent 'frobnicator': none of the 3 discovered node(s) has it; nothing ran\n" in ran.stdout
    assert "No response from" not in ran.stdout
    assert ran.stdout.splitlines()[1] == "  Nodes: 3 discovered, 0 replied, 0 ok, 0 failed"
    as_json = json.loads((await nmc(env, "rpc", "frobnicator", "go", "--json")).stdout)
    assert (as_json["replies"], as_json["no_response"]) == ([], [])
    assert as_json["summary"]["no_node_serves_agent"] is True and as_json["summary"]["discovered"] == 3
    # An agent the nodes have is no such case, known to the client or not.
    served = json.loads((await nmc(env, "rpc", "secret", "count", "count=1", "--json")).stdout)
    assert served["summary"]["no_node_serves_agent"] is False and len(served["replies"]) == 3


async def test_agent_unknown_to_the_client_is_validated_by_the_nodes(hello_fleet) -> None:
    _, env = hello_fleet
    ran = await nmc(env, "rpc", "secret", "count", "count=3", "-I", "n1.test")
    assert ran.returncode == 1  # "3" went as a string: the node's DDL wants an integer
    assert "n1.test  Invalid Data: input 'count' must be of type integer, got str" in ran.stdout
    missing = await nmc(env, "rpc", "secret", "count", "-I", "n1.test", "--json")
    assert json.loads(missing.stdout)["replies"][0]["statuscode"] == 3


async def test_client_without_the_plugin_still_gets_results(hello_fleet, tmp_path: Path) -> None:
    fleet, _ = hello_fleet
    env = client_env(tmp_path / "bare", fleet.url, fleet.ca.directory, plugindir=None)
    ran = await nmc(env, "rpc", "hello", "greet", "person=ann", "-I", "n3.test")
    assert ran.returncode == 0, ran.stderr
    # No DDL here: data keys as sent, no labels, no aggregates.
    assert "   greeting: hello ann\n       role: unknown\n" in ran.stdout
    assert "Summary of" not in ran.stdout


def test_plugin_list_and_ddl(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    env = client_env(tmp_path, "nats://127.0.0.1:1", ca)
    listing = subprocess.run([*NMC, "plugin", "list", "--json"], capture_output=True, text=True, env=env,
                             timeout=60)
    assert listing.returncode == 0, listing.stderr
    rows = {r["agent"]: r for r in json.loads(listing.stdout)}
    assert rows["hello"] == {"agent": "hello", "version": "1.2.0", "source": "plugin dir",
                             "origin": str(PLUGINS / "hello.py"),
                             "description": "Greets people and says what kind of node it is"}
    assert rows["rpcutil"]["source"] == "builtin"
    text = subprocess.run([*NMC, "plugin", "list"], check=False, capture_output=True, text=True, env=env, timeout=60)
    assert any(ln.split()[:3] == ["hello", "1.2.0", "plugin"] for ln in text.stdout.splitlines())

    ddl = subprocess.run([*NMC, "plugin", "ddl", "hello"], check=False, capture_output=True, text=True, env=env, timeout=60)
    assert ddl.returncode == 0, ddl.stderr
    doc = json.loads(ddl.stdout)
    assert (doc["agent"], doc["version"], sorted(doc["actions"])) == ("hello", "1.2.0", ["check", "greet"])
    greet = doc["actions"]["greet"]
    assert greet["inputs"][0] == {"name": "person", "type": "string", "description": "Who to greet",
                                  "optional": False, "default": None, "validation": "shellsafe", "maxlength": 64}
    assert [a["function"] for a in greet["aggregates"]] == ["summary", "sum", "average", "boolean_summary"]
    assert (greet["timeout"], doc["actions"]["check"]["display"]) == (5, "failed")

    unknown = subprocess.run([*NMC, "plugin", "ddl", "nosuch"], check=False, capture_output=True, text=True, env=env, timeout=60)
    assert unknown.returncode == 4 and "unknown agent 'nosuch'" in unknown.stderr

    # --text says which actions are read-only (the ones a node may answer unsigned).
    rpcutil = subprocess.run([*NMC, "plugin", "ddl", "rpcutil", "--text"], check=False, capture_output=True, text=True,
                             env=env, timeout=60)
    assert rpcutil.returncode == 0, rpcutil.stderr
    assert rpcutil.stdout.count("read-only") == len(json.loads(
        subprocess.run([*NMC, "plugin", "ddl", "rpcutil"], capture_output=True, text=True, env=env,
                       timeout=60).stdout)["actions"])  # every rpcutil action only reads
    shell = subprocess.run([*NMC, "plugin", "ddl", "shell", "--text"], check=False, capture_output=True, text=True,
                           env=env, timeout=60)
    assert shell.returncode == 0 and "read-only" not in shell.stdout


def test_broken_client_plugin_is_a_one_line_error(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.py").write_text("import nmc_no_such_module\n")
    env = client_env(tmp_path, "nats://127.0.0.1:1", ca, plugindir=broken)
    for args in (["plugin", "list"], ["rpc", "rpcutil", "ping"]):
        ran = subprocess.run([*NMC, *args], check=False, capture_output=True, text=True, env=env, timeout=60)
        assert ran.returncode == 1
        assert ran.stderr.strip() == (f"Error: plugin {broken / 'bad.py'}: ModuleNotFoundError: "
                                      "No module named 'nmc_no_such_module'")


# ---- the daemon ---------------------------------------------------------------------------------------------


def _drain(stream) -> None:
    for _ in stream:
        pass


def _start_node(cfg: Path, env: dict[str, str]) -> subprocess.Popen:
    """`nmc serve node`, returned once it logged node_started (its own signal, not a sleep)."""
    proc = subprocess.Popen([*NMC, "serve", "node", "--config", str(cfg), "--log-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "node_started" in line:
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            return proc
    proc.kill()
    raise AssertionError("".join(lines))


def _server_cfg(tmp_path: Path, url: str, ca: Path, identity: str, plugindir: Path) -> Path:
    issued = pki.issue(ca, identity)
    cfg = tmp_path / identity / "server.cfg"
    _write_cfg(cfg, {"main_collective": "nmc", "plugin.nats.servers": url, "identity": identity,
                     "plugin.security.ca_file": str(ca / "ca.pem"), "plugindir": str(plugindir),
                     "plugin.security.cert_file": str(issued.certificate), "plugin.security.key_file": str(issued.key),
                     "registerinterval": "0"})
    return cfg


def test_serve_node_loads_the_plugindir_and_refuses_a_broken_plugin(nats_server, tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    env = client_env(tmp_path, nats_server.url, ca)
    proc = _start_node(_server_cfg(tmp_path, nats_server.url, ca, "daemon1.test", PLUGINS), env)
    try:
        ran = subprocess.run([*NMC, "rpc", "hello", "greet", "person=ann", "--jsonl"], check=False, capture_output=True,
                             text=True, env=env, timeout=60)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert ran.returncode == 0, ran.stderr
    first = json.loads(ran.stdout.splitlines()[0])
    assert (first["sender"], first["data"]["role"]) == ("daemon1.test", "unknown")

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "oops.py").write_text("from nmc.services.agent import Agent\n\nclass Oops(Agent):\n    name = 'oops'\n"
                                    "    concurrency = 'two'\n")
    refused = subprocess.run([*NMC, "serve", "node", "--config",
                              str(_server_cfg(tmp_path, nats_server.url, ca, "daemon2.test", broken))],
                             check=False, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"Error: plugin {broken / 'oops.py'}: ValueError: agent oops: "
                                      "concurrency must be an integer >= 0 (0 = no limit)")
