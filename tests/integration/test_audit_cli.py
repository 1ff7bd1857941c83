"""`nmc audit tail/query/setup` and `nmc serve audit` as real processes, and the dev fleet's audit trail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nmc.audit.records import encode_record
from nmc.audit.stream import STREAM, ensure_stream
from nmc.protocol.audit import AuditRecord
from nmc.protocol.subjects import audit_subject
from tests.integration.auditkit import connect, publish_signed
from tests.integration.fleetkit import FleetCA

NMC = [sys.executable, "-m", "nmc"]
BASE = 1764072000.0  # 2025-11-25T12:00:00Z


def nmc(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NMC, *args], capture_output=True, text=True, env=env, timeout=timeout)


def client_cfg(path: Path, url: str, ca: FleetCA) -> Path:
    """The broker, the fleet CA to verify records with, and: the test CA's node certificates carry no roles."""
    path.write_text(f"plugin.nats.servers = {url}\nplugin.security.ca_file = {ca.directory / 'ca.pem'}\n"
                    "audit.node_names = *.test\n")
    return path


@pytest.fixture
async def audit_env(nats_url: str, tmp_path: Path, test_ca: FleetCA) -> dict[str, str]:
    """A client config naming the broker and the CA, and a stream holding six records of two nodes."""
    cfg = client_cfg(tmp_path / "client.cfg", nats_url, test_ca)
    nc = await connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    rows = [("alice", "web1.test", "puppet", "runonce", 0), ("alice", "web2.test", "puppet", "runonce", 60),
            ("bob", "web1.test", "service", "restart", 3600)]
    for i, (who, node, agent, action, offset) in enumerate(rows):
        for phase in ("decision", "result"):
            record = AuditRecord(phase=phase, request_id=f"req-{i}", request_time=BASE + offset, caller=f"cert={who}",
                                 sender="admin", identity=node, collective="nmc", agent=agent, action=action,
                                 data={"n": i}, status=0 if phase == "result" else None, time=BASE + offset)
            await publish_signed(js, record, test_ca.signer(node))
    # Unsigned records (a node older than nmc.audit.v2, or a forgery) are not shown as genuine.
    forged = AuditRecord(phase="decision", request_id="forged", request_time=BASE, caller="cert=mallory", sender="x",
                         identity="web1.test", collective="nmc", agent="rpcutil", action="ping", time=BASE + 7200)
    await js.publish(audit_subject("nmc", "web1.test"), encode_record(forged))
    await nc.close()
    return {**os.environ, "NMC_CONFIG": str(cfg), "HOME": str(tmp_path)}


def test_tail_shows_the_newest_records(audit_env):
    out = nmc(audit_env, "audit", "tail", "-n", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2  # the newest of the three is the unsigned one: left out, and said so
    assert lines[0].startswith("2025-11-25T13:00:00.000Z web1.test decision cert=bob service.restart allowed req=req-2")
    assert "result   cert=bob service.restart status 0" in lines[1]
    assert out.stderr.startswith("nmc audit: 1 record(s) in NMC_AUDIT not shown: not signed by the node they name")
    assert "missing Nmc-Signature header" in out.stderr and len(out.stderr.splitlines()) == 1
    as_json = nmc(audit_env, "audit", "tail", "-n", "100", "--json")
    assert [json.loads(ln)["request_id"] for ln in as_json.stdout.splitlines()] == [
        "req-0", "req-0", "req-1", "req-1", "req-2", "req-2"]
    shown = nmc(audit_env, "audit", "tail", "-n", "1", "--json", "--unverified")
    [marked] = [json.loads(ln) for ln in shown.stdout.splitlines()]
    assert (marked["request_id"], marked["verified"]) == ("forged", False) and "Nmc-Signature" in marked["refused"]
    text = nmc(audit_env, "audit", "tail", "-n", "1", "--unverified")
    assert text.stdout.startswith("UNVERIFIED (signature: missing Nmc-Signature header) ") and text.stderr == ""


def test_query_filters_by_caller_agent_action_identity_and_time(audit_env):
    def ids(*args: str) -> list[tuple[str, str]]:
        out = nmc(audit_env, "audit", "query", "--json", *args)
        assert out.returncode == 0, out.stderr
        return [(r["request_id"], r["phase"]) for r in map(json.loads, out.stdout.splitlines())]

    assert ids("--caller", "cert=alice") == [("req-0", "decision"), ("req-0", "result"), ("req-1", "decision"),
                                             ("req-1", "result")]
    assert ids("--identity", "web1.test", "--phase", "decision") == [("req-0", "decision"), ("req-2", "decision")]
    assert ids("--agent", "service", "--action", "restart") == [("req-2", "decision"), ("req-2", "result")]
    assert ids("--since", "2025-11-25T12:00:30Z", "--until", "2025-11-25T12:30:00Z") == [
        ("req-1", "decision"), ("req-1", "result")]
    assert ids("--caller", "cert=nobody") == []
    bad = nmc(audit_env, "audit", "query", "--since", "yesterday-ish")
    assert bad.returncode != 0 and "neither a time" in bad.stderr and "Traceback" not in bad.stderr


async def test_tail_follow_prints_records_as_they_arrive(audit_env, nats_url, test_ca):
    proc = await asyncio.create_subprocess_exec(*NMC, "audit", "tail", "-n", "0", "-f", "--json",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=audit_env)
    nc = await connect(nats_url)
    try:
        record = AuditRecord(phase="decision", request_id="live-1", request_time=time.time(), caller="cert=carol",
                             sender="admin", identity="db1.test", collective="nmc", agent="rpcutil", action="ping",
                             time=time.time())
        db1 = test_ca.signer("db1.test")
        # Publish (new copies, the follower shows one) until the follower prints: no guessing how long it takes to start.
        assert proc.stdout is not None
        line = b""
        deadline = time.monotonic() + 30
        while not line and time.monotonic() < deadline:
            body = encode_record(record)
            await nc.jetstream().publish("nmc.audit.nmc.db1%2Etest", body, headers=db1.headers(body))
            with contextlib.suppress(asyncio.TimeoutError):
                line = await asyncio.wait_for(proc.stdout.readline(), timeout=0.5)
        assert line, "tail -f printed nothing"
        assert json.loads(line)["request_id"] == "live-1"
    finally:
        await nc.close()
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), timeout=20)
    assert proc.returncode == 130


def test_setup_creates_the_stream_with_its_max_age(nats_url, tmp_path):
    cfg = tmp_path / "client.cfg"
    cfg.write_text(f"plugin.nats.servers = {nats_url}\n")
    env = {**os.environ, "NMC_CONFIG": str(cfg), "HOME": str(tmp_path)}
    out = nmc(env, "audit", "setup", "--max-age", "90d")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"stream {STREAM}: subjects nmc.audit.>, 0 records, kept 90d, 1 replica(s)"
    missing = nmc(env, "audit", "setup", "--max-age", "soon")
    assert missing.returncode != 0 and "--max-age" in missing.stderr


def test_reading_without_a_stream_or_broker_is_one_line(nats_url, tmp_path, test_ca):
    cfg = client_cfg(tmp_path / "client.cfg", nats_url, test_ca)
    env = {**os.environ, "NMC_CONFIG": str(cfg), "HOME": str(tmp_path)}
    out = nmc(env, "audit", "query")
    assert out.returncode == 1 and "stream NMC_AUDIT does not exist yet" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    cfg.write_text(f"plugin.nats.servers = {nats_url}\n")
    out = nmc(env, "audit", "query")
    assert out.returncode == 1 and "plugin.security.ca_file is not set" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_serve_audit_bad_config_is_one_line(tmp_path):
    cfg = tmp_path / "audit.cfg"
    cfg.write_text("audit.syslog = http://nope\n")
    out = nmc(os.environ.copy(), "serve", "audit", "--config", str(cfg))
    assert out.returncode == 1 and "audit.syslog" in out.stderr and "Traceback" not in out.stderr


def test_dev_up_keeps_an_audit_trail(tmp_path):
    env = {**os.environ, "NMC_CONFIG": str(tmp_path / "dev" / "client.cfg"), "HOME": str(tmp_path)}
    proc = subprocess.Popen([*NMC, "dev", "up", "--nodes", "2", "--dir", str(tmp_path / "dev"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            banner.append(line)
            if "Press Ctrl-C" in line:
                break
        trail = tmp_path / "dev" / "audit" / "audit.jsonl"
        assert any(str(trail) in ln for ln in banner), "".join(banner)
        rpc = nmc(env, "rpc", "rpcutil", "ping", "--json")
        assert rpc.returncode == 0, rpc.stderr
        request_id = json.loads(rpc.stdout)["request_id"]
        deadline = time.monotonic() + 30
        records: list[dict] = []
        while time.monotonic() < deadline and len(records) < 4:
            lines = trail.read_text().splitlines() if trail.exists() else []
            records = [r for r in map(json.loads, lines) if r["request_id"] == request_id]
            time.sleep(0.05)
        # (The rpc's discovery broadcast is audited too; these are the rpc's own records.)
        assert sorted((r["identity"], r["phase"]) for r in records) == [
            ("node1.example.net", "decision"), ("node1.example.net", "result"),
            ("node2.example.net", "decision"), ("node2.example.net", "result")]
        tail = nmc(env, "audit", "tail", "-n", "4")
        assert tail.returncode == 0 and len(tail.stdout.splitlines()) == 4, tail.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
