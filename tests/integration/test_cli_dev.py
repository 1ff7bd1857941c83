"""The README promise: `nmc dev up` in one shell, `nmc ping`/`find`/`rpc` in another, as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

NMC = [sys.executable, "-m", "nmc"]


@pytest.fixture
def dev_fleet(tmp_path: Path):
    """`nmc dev up --nodes 5` as a subprocess; yields the env a second shell would have."""
    env = {**os.environ, "NMC_CONFIG": str(tmp_path / "dev" / "client.cfg"), "HOME": str(tmp_path)}
    proc = subprocess.Popen([*NMC, "dev", "up", "--nodes", "5", "--dir", str(tmp_path / "dev"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C" in line:
            break
    assert any("Press Ctrl-C" in ln for ln in lines), "".join(lines)
    yield env, "".join(lines)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "dev fleet stopped" in out


def nmc(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NMC, *args], capture_output=True, text=True, env=env, timeout=60)


def test_dev_up_then_ping_find_rpc(dev_fleet):
    env, banner = dev_fleet
    assert "nmc ping" in banner and "5 nodes" in banner

    ping = nmc(env, "ping")
    assert ping.returncode == 0, ping.stderr
    names = [ln.split()[0] for ln in ping.stdout.splitlines() if "time=" in ln]
    assert sorted(names) == [f"node{i}.example.net" for i in range(1, 6)]
    assert "5 replies max:" in ping.stdout

    find = nmc(env, "find", "-F", "country=us", "--json")
    assert find.returncode == 0, find.stderr
    assert json.loads(find.stdout) == ["node1.example.net", "node4.example.net"]

    rpc = nmc(env, "rpc", "rpcutil", "get_fact", "fact=role", "-F", "role=db", "--json")
    assert rpc.returncode == 0, rpc.stderr
    out = json.loads(rpc.stdout)
    assert {(r["sender"], r["data"]["value"]) for r in out["replies"]} == {
        ("node3.example.net", "db"), ("node4.example.net", "db")}
    assert out["summary"]["no_response"] == 0

    text = nmc(env, "rpc", "rpcutil", "inventory", "-I", "node2.example.net")
    assert text.returncode == 0 and "node2.example.net" in text.stdout and "Finished processing 1 / 1" in text.stdout


def test_rpc_failures_and_usage_errors_have_exit_codes(dev_fleet):
    env, _ = dev_fleet
    failed = nmc(env, "rpc", "rpcutil", "get_fact", "fact=nosuchfact")
    assert failed.returncode == 1 and "Aborted" in failed.stdout
    usage = nmc(env, "rpc", "rpcutil", "get_fact")
    assert usage.returncode == 4 and "missing required input 'fact'" in usage.stderr
    bad_filter = nmc(env, "ping", "-S", "country=us and (")
    assert bad_filter.returncode == 4 and "column" in bad_filter.stderr
    assert "Traceback" not in usage.stderr + bad_filter.stderr
    nobody = nmc(env, "rpc", "rpcutil", "ping", "-F", "country=nowhere")
    assert nobody.returncode == 2 and "did not discover any nodes" in nobody.stderr


def test_no_broker_is_a_one_line_error(tmp_path):
    cfg = tmp_path / "client.cfg"
    ca = tmp_path / "ca"
    from nmc.ops import pki

    pki.init_ca(ca)
    issued = pki.issue(ca, "alice")
    from nmc.ops.broker.server import free_port

    cfg.write_text(f"plugin.nats.servers = nats://127.0.0.1:{free_port()}\n"
                   f"plugin.security.ca_file = {ca / 'ca.pem'}\n"
                   f"plugin.security.cert_file = {issued.certificate}\n"
                   f"plugin.security.key_file = {issued.key}\n")
    result = nmc({**os.environ, "NMC_CONFIG": str(cfg)}, "ping")
    assert result.returncode == 1
    assert "cannot connect to NATS" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # Short, and the same words as the sample in docs/cli.md.
    url = cfg.read_text().splitlines()[0].split("= ")[1]
    line = result.stderr.strip()
    assert len(line) < 160, line
    documented = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    assert line.replace(url, "tls://127.0.0.1:4222") in documented.splitlines()


def test_find_json_piped_into_rpc_with_stdin_discovery(dev_fleet, tmp_path):
    env, _ = dev_fleet
    found = nmc(env, "find", "-F", "role=web", "--json")
    assert found.returncode == 0, found.stderr
    piped = subprocess.run([*NMC, "rpc", "rpcutil", "get_fact", "fact=role", "--dm", "stdin", "--json"],
                           input=found.stdout, capture_output=True, text=True, env=env, timeout=60)
    assert piped.returncode == 0, piped.stderr
    out = json.loads(piped.stdout)
    assert sorted(r["sender"] for r in out["replies"]) == json.loads(found.stdout)
    assert {r["data"]["value"] for r in out["replies"]} == {"web"}

    listing = tmp_path / "nodes.txt"
    listing.write_text("node1.example.net\nnode9.example.net\n")
    flat = nmc(env, "rpc", "rpcutil", "ping", "--nodes", str(listing), "--json")
    assert flat.returncode == 2, "node9 does not exist: some did not answer"
    assert json.loads(flat.stdout)["no_response"] == ["node9.example.net"]

    limited = nmc(env, "rpc", "rpcutil", "ping", "--limit", "2", "--limit-seed", "5", "--json")
    again = nmc(env, "rpc", "rpcutil", "ping", "--limit", "2", "--limit-seed", "5", "--json")
    names = sorted(r["sender"] for r in json.loads(limited.stdout)["replies"])
    assert len(names) == 2 and names == sorted(r["sender"] for r in json.loads(again.stdout)["replies"])
    bad = nmc(env, "rpc", "rpcutil", "ping", "--limit", "0")
    assert bad.returncode == 4 and "--limit takes N or N%" in bad.stderr


def test_registry_discovery_from_the_cli(dev_fleet):
    env, _ = dev_fleet
    found = nmc(env, "find", "--dm", "registry", "-F", "country=us", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == ["node1.example.net", "node4.example.net"]
    rpc = nmc(env, "rpc", "rpcutil", "ping", "--dm", "registry", "-C", "nginx", "--json")
    assert rpc.returncode == 0, rpc.stderr
    assert sorted(r["sender"] for r in json.loads(rpc.stdout)["replies"]) == ["node1.example.net",
                                                                             "node2.example.net"]
