"""`--json` on commands that talk to a broker: `nmc audit setup --json` and `nmc dev up --json`'s ready line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

NMC = [sys.executable, "-m", "nmc"]


def nmc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NMC, *args], check=False, capture_output=True, text=True, env=env, timeout=60)


def _pings_counted(url: str, nodes: int = 2, within: float = 10.0) -> dict[str, float]:
    """nmc_node_requests_total of rpcutil.ping status ok by identity, scraped until `nodes` nodes show
    (a node counts a request right after it sent the reply the client already has)."""
    import time
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    deadline, counted = time.monotonic() + within, {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the fleet's loopback URL
            text = response.read().decode("utf-8")
        counted = {s.labels["identity"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "nmc_node_requests_total" and s.labels.get("action") == "ping"
                   and s.labels.get("status") == "ok"}
        if len(counted) >= nodes:
            break
        time.sleep(0.05)
    return counted


def test_audit_setup_json(nats_url: str, tmp_path: Path):
    cfg = tmp_path / "client.cfg"
    cfg.write_text(f"plugin.nats.servers = {nats_url}\n")
    env = {**os.environ, "NMC_CONFIG": str(cfg), "HOME": str(tmp_path)}
    out = nmc(env, "audit", "setup", "--max-age", "2h", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"stream": "NMC_AUDIT", "subjects": ["nmc.audit.>"], "messages": 0,
                                      "max_age_s": 7200, "replicas": 1}


def _console_nodes(url: str, within: float = 10.0) -> list[str]:
    """The console's /api/fleet node identities, read with the token of `url` until both nodes are registered;
    the same call without the token is refused."""
    import time
    import urllib.error
    import urllib.request

    root, token = url.split("/?token=")
    try:
        urllib.request.urlopen(f"{root}/api/fleet", timeout=5)
        raise AssertionError("the console answered without its token")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    deadline, nodes = time.monotonic() + within, []
    while time.monotonic() < deadline and len(nodes) < 2:
        request = urllib.request.Request(f"{root}/api/fleet", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            nodes = [n["identity"] for n in json.loads(answer.read())["nodes"]]
        if len(nodes) < 2:
            time.sleep(0.05)  # the poll's pace: the loop ends on the observed registry, not on a timer
    return nodes


@pytest.mark.timeout(120)
def test_dev_up_json_ready_line_is_enough_to_use_the_fleet(tmp_path: Path):
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("NMC_CONFIG", None)
    with (tmp_path / "dev.err").open("w") as err:
        proc = subprocess.Popen([*NMC, "dev", "up", "--nodes", "2", "--dir", str(tmp_path / "dev"), "--port", "0",
                                 "--json"], stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the first and only line once every node is up
        ready = json.loads(line)
        assert ready["nodes"] == ["node1.example.net", "node2.example.net"]
        assert ready["broker"].startswith("tls://127.0.0.1:")
        assert Path(ready["policy_dir"]).is_dir()
        ping = nmc({**env, "NMC_CONFIG": ready["client_config"]}, "ping")
        assert ping.returncode == 0, ping.stderr
        assert "2 replies" in ping.stdout
        # One metrics endpoint for the whole dev process, on loopback: both nodes' pings counted by identity
        assert ready["metrics"].startswith("http://127.0.0.1:") and ready["metrics"].endswith("/metrics")
        assert _pings_counted(ready["metrics"]) == {"node1.example.net": 1.0, "node2.example.net": 1.0}
        # The read-only web console, on loopback, behind the token its URL carries (docs/console.md)
        assert ready["console"].startswith("http://127.0.0.1:") and "/?token=" in ready["console"]
        assert _console_nodes(ready["console"]) == ["node1.example.net", "node2.example.net"]
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and rest == ""


@pytest.mark.timeout(120)
async def test_dev_up_unsigned_actions_answers_an_unsigned_query(tmp_path: Path):
    """`nmc dev up --unsigned-actions rpcutil.get_fact`: a plain `nats req` (here nats-py, no signature) gets the fact."""
    import ssl

    import nats

    from nmc.protocol.subjects import node_subject

    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("NMC_CONFIG", None)
    dev = tmp_path / "dev"
    with (tmp_path / "dev.err").open("w") as err:
        proc = subprocess.Popen([*NMC, "dev", "up", "--nodes", "2", "--dir", str(dev), "--port", "0", "--json",
                                 "--unsigned-actions", "rpcutil.get_fact"],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert "unsigned=nats" in (Path(ready["policy_dir"]) / "default.policy").read_text()
        tls = ssl.create_default_context(cafile=str(dev / "ca" / "ca.pem"))
        tls.load_cert_chain(str(dev / "ca" / "certs" / "admin.pem"), str(dev / "ca" / "private" / "admin.key"))
        nc = await nats.connect(ready["broker"], tls=tls, inbox_prefix=b"_INBOX.admin")
        try:
            asked = await nc.request(node_subject("nmc", "node1.example.net", "rpcutil", "get_fact"),
                                     b'{"fact":"role"}', timeout=10)
            refused = await nc.request(node_subject("nmc", "node1.example.net", "rpcutil", "inventory"),
                                       b"", timeout=10)
        finally:
            await nc.close()
        reply = json.loads(asked.data)
        assert (reply["status"], reply["data"]) == (0, {"fact": "role", "value": "web"})
        assert json.loads(refused.data)["status"] != 0  # not in the allowlist: still needs a signature
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("nmc dev up did not stop on SIGINT: " + (tmp_path / "dev.err").read_text()[-3000:])


def test_dev_up_refuses_a_wildcard_unsigned_action(tmp_path: Path):
    out = nmc({**os.environ, "HOME": str(tmp_path)}, "dev", "up", "--dir", str(tmp_path / "dev"),
              "--unsigned-actions", "rpcutil.*")
    assert out.returncode == 4
    assert len(out.stderr.strip().splitlines()) == 1 and "--unsigned-actions" in out.stderr
