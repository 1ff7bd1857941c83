"""`nmc serve node` as a real daemon process: config file, JSON logs, SIGHUP fact reload, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from nmc.protocol.filter import combine
from tests.proctools import wait_for_log as _wait_for_log


async def _find(fleet, expr: str) -> set[str]:
    async with fleet.client(discovery_stall=0.2, discovery_timeout=2) as fc:
        return {r.identity for r in (await fc.discover(expr)).results}


async def test_serve_node_daemon(fleet, nats_server, tmp_path: Path):
    fleet.ca.signer("web9.test")  # issue the node's certificate with nmc's CA code
    ca = fleet.ca.directory
    (tmp_path / "facts.yaml").write_text("role: web\ncountry: de\n")
    (tmp_path / "classes.txt").write_text("role::web\nnginx\n")
    cfg = tmp_path / "server.cfg"
    cfg.write_text(f"identity = web9.test\nplugin.nats.servers = {nats_server.url}\n"
                   f"plugin.security.ca_file = {ca / 'ca.pem'}\n"
                   f"plugin.security.cert_file = {ca / 'certs' / 'web9.test.pem'}\n"
                   f"plugin.security.key_file = {ca / 'private' / 'web9.test.key'}\n"
                   "plugin.yaml = facts.yaml\nclassesfile = classes.txt\n")
    proc = subprocess.Popen([sys.executable, "-m", "nmc", "serve", "node", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NMC_LOG_FORMAT": "json"})
    try:
        started = _wait_for_log(proc, "node_started")
        assert started["identity"] == "web9.test" and started["level"] == "info"
        assert await _find(fleet, combine(facts=["role=web"])) == {"web9.test"}
        assert await _find(fleet, combine(classes=["nginx"])) == {"web9.test"}

        # The node moves from role=web to role=db: after SIGHUP it stops receiving role=web requests.
        (tmp_path / "facts.yaml").write_text("role: db\ncountry: de\n")
        proc.send_signal(signal.SIGHUP)
        changed = _wait_for_log(proc, "facts_changed")
        assert changed["changed"] == ["role"] and changed["version"] == 1
        assert await _find(fleet, combine(facts=["role=web"])) == set()
        assert await _find(fleet, combine(facts=["role=db"])) == {"web9.test"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_serve_node_bad_config_is_one_line(tmp_path: Path):
    cfg = tmp_path / "server.cfg"
    cfg.write_text("identity = x\nplugin.security.ca_file = nope.pem\nthis line is wrong\n")
    result = subprocess.run([sys.executable, "-m", "nmc", "serve", "node", "--config", str(cfg)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "server.cfg:3" in result.stderr and "Traceback" not in result.stderr
    cfg.write_text("identity = x\nplugin.security.ca_file = nope.pem\n")
    result = subprocess.run([sys.executable, "-m", "nmc", "serve", "node", "--config", str(cfg)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "plugin.security" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
