"""Helpers for the audit tests: an `nmc serve audit` process, reading the audit files, a real rsyslogd.

Every wait here polls something a user could look at (a $SRV.PING answer, the
audit service's position file, a file's lines) until it holds or a deadline passes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from nmc.audit.errors import PositionError
from nmc.audit.position import PositionFile
from nmc.audit.records import encode_record
from nmc.audit.stream import STREAM
from nmc.audit.verify import RecordVerifier
from nmc.protocol.audit import AuditRecord
from nmc.protocol.subjects import audit_subject
from nmc.security import Signer
from nmc.security.names import inbox_prefix
from tests.tools import require_tool

NMC = [sys.executable, "-m", "nmc"]


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Return as soon as `check()` is true; AssertionError naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(0.05)


def write_audit_cfg(path: Path, url: str, ca: Path, **keys: Any) -> Path:
    """An audit service config: broker URL, the fleet CA (`ca`: its ca.pem) plus `audit.<key>` values.

    The test fleets' node certificates carry no roles, so `audit.node_names` defaults to `*`.
    """
    keys = {"node_names": "*", **keys}
    lines = [f"plugin.nats.servers = {url}", "loglevel = info", f"plugin.security.ca_file = {ca}"]
    lines += [f"audit.{key} = {value}" for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def trusting(ca: Any) -> RecordVerifier:
    """A RecordVerifier for a test fleet's CA (a FleetCA): its node certificates carry no roles, so any name counts."""
    return RecordVerifier(ca.verifier(), node_names=("*",))


async def publish_signed(js: Any, record: AuditRecord, signer: Signer, msg_id: str | None = None) -> Any:
    """Publish `record` on its node's audit subject, signed as a node does it (`signer`: the node's)."""
    body = encode_record(record)
    headers = {"Nats-Msg-Id": msg_id or record.msg_id, **signer.headers(body)}
    return await js.publish(audit_subject(record.collective, record.identity), body, headers=headers)


class AuditProcess:
    """`nmc serve audit --config <cfg>` as a child process, its log in a file (never a pipe that could fill)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, nc: NATS, within: float = 30.0) -> None:
        """Start it and wait until it answers $SRV.PING.nmc-audit (so it hears new records)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*NMC, "serve", "audit", "--config", str(self.config), "--log-format", "json"],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        async def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"nmc serve audit exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                reply = await nc.request("$SRV.PING.nmc-audit", b"", timeout=0.5)
            except Exception:  # noqa: BLE001 - not up yet
                return False
            return json.loads(reply.data).get("name") == "nmc-audit"

        await until(answers, within, "the audit service to answer $SRV.PING")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` and wait for the process to end; its exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def ensure_stopped(self) -> None:
        """Teardown: kill it if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def audit_files(path: Path) -> list[Path]:
    """The audit file and its rotated predecessors, oldest first."""
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else -1)
    return [p for p in reversed(rotated) if p.suffix[1:].isdigit()] + ([path] if path.exists() else [])


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every JSON record in the audit file and its rotated files, oldest first."""
    out = []
    for file in audit_files(path):
        for line in file.read_text(encoding="utf-8").splitlines():
            out.append(json.loads(line))
    return out


def record_counts(path: Path) -> Counter[tuple[str, str, str]]:
    """How often each (request id, identity, phase) occurs in the written files."""
    return Counter((r["request_id"], r["identity"], r["phase"]) for r in read_records(path))


async def caught_up(nc: NATS, position_file: Path) -> bool:
    """The audit service has handled everything in the stream: its saved position is past the stream's last message.

    A position of another stream of the same name (made again) does not count.
    """
    try:
        info = await nc.jetstream().stream_info(STREAM)
    except Exception:  # noqa: BLE001 - broker restarting
        return False
    try:
        position = PositionFile(position_file).load()
    except PositionError:  # noqa: BLE001 - never half written; read as the service would
        return False
    created = info.created.isoformat() if info.created is not None else None
    return position is not None and position.next_seq > info.state.last_seq and position.stream_created == created


class Rsyslog:
    """A real rsyslogd (Debian package) on loopback ports, with its own config, pid file, work dir and output file."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_tool("rsyslogd")  # the test is skipped with one line without it (failed in CI)
        self.workdir = workdir
        self.output = workdir / "audit-received.log"
        self.tcp_port = _free_port(socket.SOCK_STREAM)
        self.udp_port = _free_port(socket.SOCK_DGRAM)
        self.unix_socket = workdir / "log.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        """Inputs on loopback TCP and UDP and a unix socket; every message to its own file as `host app msgid msg`."""
        return f"""
global(workDirectory="{self.workdir / 'spool'}" maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
module(load="imuxsock" SysSock.Use="off")
template(name="nmcAudit" type="string" string="%hostname% %app-name% %msgid% %msg%\\n")
ruleset(name="nmcAudit") {{
  action(type="omfile" file="{self.output}" template="nmcAudit")
}}
input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="nmcAudit")
input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="nmcAudit")
input(type="imuxsock" socket="{self.unix_socket}" ruleset="nmcAudit" useSpecialParser="off" parseHostname="on"
      createPath="on")
"""

    def start(self) -> None:
        """Start rsyslogd in the foreground (-n) and wait until its TCP input accepts connections."""
        (self.workdir / "spool").mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "rsyslog.conf"
        conf.write_text(self.config())
        check = subprocess.run([self.binary, "-N1", "-f", str(conf)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        log = (self.workdir / "rsyslogd.log").open("ab")
        self.proc = subprocess.Popen([self.binary, "-n", "-f", str(conf), "-i", str(self.workdir / "rsyslogd.pid")],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "RSYSLOG_DEBUG": ""})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"rsyslogd exited: {(self.workdir / 'rsyslogd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("rsyslogd did not open its TCP input")

    def lines(self) -> list[str]:
        """What rsyslog wrote so far."""
        return self.output.read_text(encoding="utf-8").splitlines() if self.output.exists() else []

    def stop(self) -> None:
        """SIGTERM, then wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def connect(url: str, *, as_name: str | None = None) -> NATS:
    """A client connection that reconnects quickly and forever (tests restart the broker).

    `as_name`: the certificate name a FleetClient on it signs with; replies come to that name's
    inbox, the only one nodes answer into.
    """
    inbox = {"inbox_prefix": inbox_prefix(as_name)} if as_name is not None else {}
    return await nats.connect(url, reconnect_time_wait=0.1, max_reconnect_attempts=-1, connect_timeout=2, **inbox)
