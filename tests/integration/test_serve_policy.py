"""`nmc serve policy` and `nmc serve node` (authz.mode = service) as real daemons, configured by files."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats

from nmc.protocol.subjects import reloaded_subject
from nmc.transport.compat import synced_flush
from nmc.protocol.status import Status
from tests.proctools import wait_for_log as _wait_for_log


def _daemon(kind: str, cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nmc", "serve", kind, "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NMC_LOG_FORMAT": "json"})


def _security(ca: Path, name: str) -> str:
    return (f"plugin.security.ca_file = {ca / 'ca.pem'}\n"
            f"plugin.security.cert_file = {ca / 'certs' / f'{name}.pem'}\n"
            f"plugin.security.key_file = {ca / 'private' / f'{name}.key'}\n")


async def _ping(fleet, caller: str) -> tuple[Status, str]:
    async with fleet.client(caller) as fc:
        result = await fc.call("rpcutil", "ping", {}, expect=["web9.test"], timeout=10)
    return result.results[0].status, result.results[0].message


async def test_policy_daemon_and_node_daemon(fleet, nats_server, tmp_path: Path):
    ca = fleet.ca.directory
    fleet.ca.signer("web9.test")
    fleet.ca.signer("policy-a")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rpcutil.policy").write_text("policy default deny\nallow\tcert=alice\t*\t*\n")
    (tmp_path / "policy.cfg").write_text(f"plugin.nats.servers = {nats_server.url}\n{_security(ca, 'policy-a')}"
                                         "authz.policydir = policies\n")
    (tmp_path / "server.cfg").write_text(f"identity = web9.test\nplugin.nats.servers = {nats_server.url}\n"
                                         f"{_security(ca, 'web9.test')}factsource = builtin\nregisterinterval = 0\n"
                                         "authz.mode = service\nauthz.signers = policy-a\n")
    service = _daemon("policy", tmp_path / "policy.cfg")
    node = _daemon("node", tmp_path / "server.cfg")
    try:
        started = _wait_for_log(service, "policy_service_started")
        assert started["files"] == 1 and started["errors"] == 0 and started["signer"] == "policy-a"
        _wait_for_log(node, "node_started")

        assert await _ping(fleet, "alice") == (Status.OK, "OK")
        assert await _ping(fleet, "bob") == (Status.ABORTED, ("not authorized: no rule allows cert=bob to run "
                                                              "rpcutil.ping; policy default deny (rpcutil.policy:1)"))
        decision = _wait_for_log(service, "authz_decision", caller="cert=bob")
        assert decision["allowed"] is False and decision["identity"] == "web9.test"

        # Change the file in place: the service notices, re-reads it and tells the node; nothing restarts.
        nc = await nats.connect(nats_server.url)
        notices: asyncio.Queue = asyncio.Queue()
        await nc.subscribe(reloaded_subject("nmc"), cb=notices.put)
        await synced_flush(nc)
        tmp = policies / ".rpcutil.policy.new"
        tmp.write_text("policy default deny\nallow\tcert=alice cert=bob\t*\t*\n")
        os.replace(tmp, policies / "rpcutil.policy")
        await asyncio.wait_for(notices.get(), timeout=15)
        await nc.close()
        assert await _ping(fleet, "bob") == (Status.OK, "OK")
    finally:
        for proc in (node, service):
            proc.send_signal(signal.SIGTERM)
        for proc in (node, service):
            proc.wait(timeout=20)
    assert (node.returncode, service.returncode) == (0, 0)


def test_serve_policy_config_errors_are_one_line(tmp_path: Path):
    cfg = tmp_path / "policy.cfg"
    cfg.write_text("authz.policydir = nowhere\n")
    result = subprocess.run([sys.executable, "-m", "nmc", "serve", "policy", "--config", str(cfg)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"authz.policydir = {tmp_path / 'nowhere'}: directory not found" in result.stderr
