"""`nmc dev up` as a new user runs it: again and again in one HOME, twice at once, killed, interrupted.

Real processes only: the `nmc` command, its nats-server, its nodes and services.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.proctools import gone

NMC = [sys.executable, "-m", "nmc"]
NODES = [f"node{i}.example.net" for i in range(1, 4)]


def _start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], dict]:
    """`nmc dev up --nodes 3 --port 0 --json`; returns the process and its ready line."""
    proc = subprocess.Popen([*NMC, "dev", "up", "--nodes", "3", "--port", "0", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the ready line, or "" when it ended without one
    if not line:
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"nmc dev up ended without a ready line (exit {proc.returncode}): {err}")
    return proc, json.loads(line)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "dev fleet stopped" in err
    return err


def _ping(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NMC, "ping", "--json"], capture_output=True, text=True, env=env, timeout=60)


def _pinged(env: dict[str, str]) -> list[str]:
    result = _ping(env)
    assert result.returncode == 0, result.stderr
    return sorted(r["sender"] for r in json.loads(result.stdout)["replies"])


def _children(pid: int) -> list[int]:
    """Every process whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A new user's environment: an empty HOME, no NMC_* settings, nothing in /etc/nmc."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NMC_") and k != "XDG_STATE_HOME"}
    etc = tmp_path / "etc"
    etc.mkdir()
    return {**env, "HOME": str(tmp_path / "home"), "NMC_ETC_DIR": str(etc)}


def test_dev_up_again_and_again_in_one_home(home):
    """Ctrl-C and start again, three times: every start serves every node (the CA and certificates are reused)."""
    ca_cert = Path(home["HOME"]) / ".local/state/nmc/dev/ca/ca.pem"
    first_ca = None
    for _ in range(3):
        proc, ready = _start(home)
        try:
            assert _pinged(home) == NODES
            first_ca = first_ca or ca_cert.read_bytes()
            assert ca_cert.read_bytes() == first_ca, "a valid CA is kept across restarts"
        finally:
            _stop(proc)


def test_broker_certificate_of_another_ca_is_issued_again(home):
    """A state directory whose CA was made again (the old broker certificate left behind) still starts."""
    proc, _ = _start(home)
    _stop(proc)
    ca = Path(home["HOME"]) / ".local/state/nmc/dev/ca"
    from nmc.ops import pki

    pki.init_ca(ca, force=True)  # a new CA; every certificate in certs/ is now from the old one
    proc, _ = _start(home)
    try:
        assert _pinged(home) == NODES
        assert pki.issued_problem(ca, "broker") is None
    finally:
        _stop(proc)


def _snapshot(root: Path) -> dict[str, bytes]:
    """The bytes of the CA, every config and the broker's config, and the names of the store's files."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_file() and (rel.startswith("ca/") or path.suffix in (".cfg", ".conf", ".policy")):
            files[rel] = path.read_bytes()
        elif path.is_dir() and rel.startswith("broker/jetstream"):
            files[rel + "/"] = b""
    return files


def test_second_dev_up_in_the_same_directory_refuses_and_leaves_the_first_alone(home):
    proc, _ = _start(home)
    try:
        root = Path(home["HOME"]) / ".local/state/nmc/dev"
        before = _snapshot(root)
        second = subprocess.run([*NMC, "dev", "up", "--nodes", "2", "--port", "0"], capture_output=True, text=True,
                                env=home, timeout=60)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"already running in {root} (pid {proc.pid})" in lines[0] and "--dir" in lines[0]
        assert _snapshot(root) == before
        assert _pinged(home) == NODES
    finally:
        _stop(proc)


def test_second_fleet_in_its_own_directory(home, tmp_path):
    proc, _ = _start(home)
    other = tmp_path / "other"
    proc2, ready2 = _start(home, "--dir", str(other))
    try:
        assert ready2["client_config"] == str(other / "client.cfg")
        assert _pinged({**home, "NMC_CONFIG": ready2["client_config"]}) == NODES
        assert _pinged(home) == NODES
    finally:
        err2 = _stop(proc2)
        _stop(proc)
    assert f"dev fleet in {other}" in err2


async def test_sigkill_of_dev_up_leaves_no_process_behind(home):
    proc, _ = _start(home)
    children = _children(proc.pid)
    assert children, "the broker runs as a child process"
    proc.kill()
    proc.wait(timeout=10)
    for pid in children:
        assert await gone(pid, within=10), f"child {pid} outlived a SIGKILLed nmc dev up"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_during_start_up_stops_everything(home, sig):
    """A signal as soon as the broker runs (the nodes still starting) ends dev up and its broker at once."""
    proc = subprocess.Popen([*NMC, "dev", "up", "--nodes", "3", "--port", "0", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=home, start_new_session=True)
    deadline = time.monotonic() + 30
    children: list[int] = []
    while not children and time.monotonic() < deadline and proc.poll() is None:
        children = _children(proc.pid)
        time.sleep(0.01)  # polling /proc: nothing to wait on for "a child was forked"
    assert children, "no broker was started"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
    assert "dev fleet stopped" in err
    for pid in children:
        assert await gone(pid, within=10)


def test_ping_with_a_client_config_of_another_ca_fails_fast_with_one_line(home, tmp_path):
    proc, ready = _start(home)
    try:
        from nmc.ops import pki

        pki.init_ca(tmp_path / "ca2")
        alice = pki.issue(tmp_path / "ca2", "alice", roles=("user",))
        text = Path(ready["client_config"]).read_text()
        ca_line = next(ln for ln in text.splitlines() if ln.startswith("plugin.security.ca_file"))
        foreign = tmp_path / "foreign.cfg"
        foreign.write_text(text.replace(ca_line, f"plugin.security.ca_file = {tmp_path / 'ca2' / 'ca.pem'}")
                           .replace(str(Path(ready["client_config"]).parent / "ca" / "certs" / "admin.pem"),
                                    str(alice.certificate))
                           .replace(str(Path(ready["client_config"]).parent / "ca" / "private" / "admin.key"),
                                    str(alice.key)))
        started = time.monotonic()
        result = subprocess.run([*NMC, "--config", str(foreign), "ping"], capture_output=True, text=True,
                                env=home, timeout=60)
        took = time.monotonic() - started
        assert result.returncode == 1
        assert took < 2 + 2, f"took {took:.1f} s: the connect timeout is 2 s"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "cannot connect to NATS" in lines[0]
        assert "TLS verification of the broker's certificate failed" in lines[0]
        assert "plugin.security.ca_file" in lines[0]
    finally:
        _stop(proc)


def test_a_node_that_cannot_verify_the_broker_logs_why_and_still_stops(home, tmp_path):
    """A daemon keeps retrying, logging the reason, instead of hanging silently; SIGTERM stops it at once."""
    proc, ready = _start(home)
    try:
        from nmc.ops import pki

        pki.init_ca(tmp_path / "ca2")
        node_cfg = Path(ready["client_config"]).parent / "nodes" / "node1.example.net" / "server.cfg"
        text = node_cfg.read_text()
        ca_line = next(ln for ln in text.splitlines() if ln.startswith("plugin.security.ca_file"))
        bad = node_cfg.parent / "bad.cfg"
        # A replay file of its own: node1's is locked by the fleet's node1, which keeps running.
        bad.write_text(text.replace(ca_line, f"plugin.security.ca_file = {tmp_path / 'ca2' / 'ca.pem'}")
                       .replace("security.replay_file = replay.log", "security.replay_file = bad-replay.log"))
        node = subprocess.Popen([*NMC, "serve", "node", "--config", str(bad)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=home)
        from tests.proctools import wait_for_log

        entry = wait_for_log(node, "nats_connect_failed")
        assert "TLS verification of the broker's certificate failed" in entry["reason"]
        node.send_signal(signal.SIGTERM)
        node.communicate(timeout=10)
        assert node.returncode == 0
    finally:
        _stop(proc)
