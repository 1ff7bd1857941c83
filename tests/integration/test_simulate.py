"""`nmc ops simulate` as a real process tree: a broker, worker processes, real nodes, the real CLI against them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nmc.ops.broker.authorization import spki_pin
from nmc.ops.config.files import load_config
from nmc.ops.fleet.dev import node_facts_for
from nmc.security import certificate_name, load_certificate_pem
from tests.proctools import gone

NMC = [sys.executable, "-m", "nmc"]
NODES = 30


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, dict]:
    """Start the simulator; return it and its --json ready line (or fail with what it printed)."""
    err = (tmp_path / "sim.err").open("w")
    proc = subprocess.Popen([*NMC, "ops", "simulate", "--dir", str(tmp_path / "sim"), "--json", *args],
                            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("{"):
            return proc, json.loads(line)
    proc.kill()
    proc.wait()
    raise AssertionError(f"simulator never got ready: {(tmp_path / 'sim.err').read_text()}")


def _nmc(status: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NMC, "-c", status["client_cfg"], *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture
def simulation(tmp_path):
    proc, status = _start(tmp_path, "--nodes", str(NODES), "--processes", "2")
    yield proc, status
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in [*status["worker_pids"], status["broker_pid"]]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def test_simulated_nodes_answer_the_real_cli_and_sigterm_stops_every_process(simulation, tmp_path):
    proc, status = simulation
    assert status["nodes"] == NODES and status["processes"] == 2 and len(set(status["worker_pids"])) == 2
    assert status["authz"] == "local" and status["audit"] is True

    ping = _nmc(status, "ping", "--json")
    assert ping.returncode == 0, ping.stderr
    out = json.loads(ping.stdout)
    expected = {node_facts_for(i)[0] for i in range(1, NODES + 1)}
    # The client drops any reply not signed by a certificate named like its sender, so 30 distinct
    # senders and nothing dropped means 30 certificates answered.
    assert {r["sender"] for r in out["replies"]} == expected
    assert out["summary"]["dropped"] == 0

    web = _nmc(status, "rpc", "rpcutil", "get_fact", "fact=role", "-F", "role=web", "--json")
    assert web.returncode == 0, web.stderr
    replies = json.loads(web.stdout)["replies"]
    assert {r["sender"] for r in replies} == {node_facts_for(i)[0] for i in range(1, NODES + 1)
                                              if node_facts_for(i)[1]["role"] == "web"}
    assert {r["data"]["value"] for r in replies} == {"web"}

    # Each node's config names its own certificate (its own key), issued for its identity.
    pins = set()
    for identity in expected:
        cfg = load_config(tmp_path / "sim" / "nodes" / identity / "server.cfg", kind="server", env={})
        cert = load_certificate_pem(Path(cfg.get("plugin.security.cert_file")).read_bytes())
        assert certificate_name(cert) == identity
        pins.add(spki_pin(cert))
    assert len(pins) == NODES

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, (tmp_path / "sim.err").read_text()
    assert "simulation stopped" in (tmp_path / "sim.err").read_text()
    for pid in [*status["worker_pids"], status["broker_pid"]]:
        assert await gone(pid, within=10), f"pid {pid} outlived the simulator"


async def test_workers_do_not_outlive_a_killed_parent(tmp_path):
    proc, status = _start(tmp_path, "--nodes", "4", "--processes", "2", "--no-audit", "--authz", "none")
    try:
        proc.kill()  # no chance to clean up: the workers must notice on their own
        proc.wait()
        for pid in status["worker_pids"]:
            assert await gone(pid, within=30), f"worker {pid} outlived its killed parent"
    finally:
        for pid in [*status["worker_pids"], status["broker_pid"]]:
            try:
                os.kill(pid, signal.SIGKILL)  # the broker is left behind by a SIGKILL (as with `nmc dev up`)
            except ProcessLookupError:
                pass
