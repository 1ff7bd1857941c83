"""Colour only on a terminal: `nmc ping` against a real node, into a pipe and under a pseudo-terminal.

Into a pipe (`nmc ping | less`, a script) the output has no ANSI escape codes;
on a terminal the headings are bold; NO_COLOR (no-color.org) and `--no-color`
turn colour off even there, and `--color` turns it on even into a pipe. JSON
is never coloured.
"""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from nmc.ops.broker.server import Broker
from tests.integration.daemonkit import NMC, DaemonFleet

ANSI = "\x1b["
BOLD_HEADING = "\x1b[1m---- ping statistics ----"


def _piped(args: list[str], env: Mapping[str, str]) -> tuple[int, str, str]:
    done = subprocess.run([*NMC, *args], check=False, env=dict(env), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout, done.stderr


def _on_a_terminal(args: list[str], env: Mapping[str, str]) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal: (exit status, everything it wrote)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([*NMC, *args], env=dict(env), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child exited and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.timeout(180)
async def test_colour_only_on_a_terminal_unless_told_otherwise(nats_server: Broker, tmp_path: Path):
    daemons = DaemonFleet(tmp_path / "fleet", nats_server.url, 1, node_cfg={"authz.mode": "none"})
    try:
        await daemons.start_nodes()
        env = {k: v for k, v in daemons.client_env().items() if k != "NO_COLOR"}
        node = daemons.identities[0]

        code, out, err = await asyncio.to_thread(_piped, ["ping"], env)
        assert code == 0 and node in out, out + err
        assert ANSI not in out + err, repr(out)

        code, seen = await asyncio.to_thread(_on_a_terminal, ["ping"], env)
        assert code == 0 and node in seen, seen
        assert BOLD_HEADING in seen, repr(seen)

        code, seen = await asyncio.to_thread(_on_a_terminal, ["ping"], {**env, "NO_COLOR": "1"})
        assert code == 0 and node in seen and ANSI not in seen, repr(seen)

        code, seen = await asyncio.to_thread(_on_a_terminal, ["--no-color", "ping"], env)
        assert code == 0 and node in seen and ANSI not in seen, repr(seen)

        code, seen = await asyncio.to_thread(_on_a_terminal, ["ping", "--json"], env)
        assert code == 0 and node in seen and ANSI not in seen, repr(seen)

        # An explicit flag beats both the pipe and NO_COLOR (no-color.org: flags override the variable).
        code, out, _ = await asyncio.to_thread(_piped, ["--color", "ping"], {**env, "NO_COLOR": "1"})
        assert code == 0 and BOLD_HEADING in out, repr(out)

        # rpc's text output: the node's identity in bold on a terminal only.
        code, seen = await asyncio.to_thread(_on_a_terminal, ["rpc", "rpcutil", "ping"], env)
        assert code == 0 and f"\x1b[1m{node}" in seen, repr(seen)
        code, out, _ = await asyncio.to_thread(_piped, ["rpc", "rpcutil", "ping"], env)
        assert code == 0 and node in out and ANSI not in out, repr(out)
    finally:
        daemons.stop_all()
