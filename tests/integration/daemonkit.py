"""A fleet of real daemon processes for fault tests: `nmc serve node|policy|audit` children one can SIGKILL.

The files come from `nmc.ops.fleet.dev.write_fleet` (the CA, certificates, server.cfg
per node, the policy service's and the audit service's configs, a client.cfg),
pointed at a broker the test started. Each daemon writes its JSON log lines to
a file (never a pipe that could fill while nobody reads it), and every wait
here polls something a user could look at — a log line, a command's output —
until it holds or a deadline passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmc.ops import pki
from nmc.ops.fleet.dev import CLIENT_NAME, DevLayout, node_facts_for, write_fleet
from nmc.security import Signer, Verifier
from tests.integration.auditkit import until

__all__ = ["NMC", "Daemon", "DaemonFleet", "NmcCommand", "log_events", "nmc", "until"]

NMC = [sys.executable, "-m", "nmc"]


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines written to `path` so far (other lines, and a torn last line, are skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


class Daemon:
    """`nmc serve KIND --config CFG` as a child process with JSON logs in `log`."""

    def __init__(self, kind: str, config: Path, log: Path) -> None:
        self.kind = kind
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        """Start it (appending to its log file, so a restart keeps the earlier lines)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*NMC, "serve", self.kind, "--config", str(self.config), "--log-format", "json"],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def events(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """Its log lines with this event (and these field values)."""
        return [e for e in log_events(self.log)
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())]

    async def wait_for(self, event: str, within: float = 30.0, count: int = 1, **fields: Any) -> dict[str, Any]:
        """The `count`-th log line with this event; fails at once if the process exited."""
        async def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"nmc serve {self.kind} exited with {self.proc.returncode}:\n"
                                     f"{self.log.read_text(errors='replace')[-3000:]}")
            return len(self.events(event, **fields)) >= count

        await until(seen, within, f"nmc serve {self.kind} to log {event!r} ({count}x)")
        return self.events(event, **fields)[count - 1]

    @property
    def pid(self) -> int:
        """The process id (started daemons only)."""
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: nothing is cleaned up. Waits for the exit."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def ensure_stopped(self) -> None:
        """Teardown: kill it if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class DaemonFleet:
    """Configs for `nodes` dev-fleet nodes plus policy and audit services on `url`; daemons started on demand.

    `node_cfg` adds (or overrides) keys in every server.cfg, e.g. `{"plugin.shell.enabled": "true"}`.
    Nodes are named node1.example.net ... like `nmc dev up`'s; the client `admin` is the one
    the dev policy allows, any other name (see `client_env`) is denied everything.
    """

    root: Path
    url: str
    nodes: int
    node_cfg: Mapping[str, str] = field(default_factory=dict)
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layout = DevLayout(self.root)
        self.server_cfgs = write_fleet(self.layout, self.nodes, self.url)
        # No registry records: these tests do not read them, and each would be one more JetStream write.
        for cfg in self.server_cfgs:
            self.add_keys(cfg, {"registerinterval": "0", **self.node_cfg})
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)

    def server_cfg(self, identity: str) -> Path:
        """One node's server.cfg."""
        return self.layout.node_dir(identity) / "server.cfg"

    @staticmethod
    def add_keys(cfg: Path, keys: Mapping[str, str]) -> None:
        """Append `key = value` lines to a config file (before its daemon starts; a later line wins)."""
        with cfg.open("a", encoding="utf-8") as out:
            out.writelines(f"{k} = {v}\n" for k, v in keys.items())

    @property
    def identities(self) -> list[str]:
        """Every node's identity, sorted (the order --batch uses)."""
        return sorted(node_facts_for(i)[0] for i in range(1, self.nodes + 1))

    def node(self, identity: str) -> Daemon:
        """A (not yet started) daemon for this node."""
        return self._daemon("node", self.server_cfg(identity), identity)

    def policy(self) -> Daemon:
        """A (not yet started) action-policy service."""
        return self._daemon("policy", self.layout.policy_cfg, "policy")

    def audit(self) -> Daemon:
        """A (not yet started) audit service writing `audit_file`."""
        return self._daemon("audit", self.layout.audit_cfg, "audit")

    @property
    def audit_file(self) -> Path:
        """The audit trail the audit service writes."""
        return self.layout.audit_dir / "audit.jsonl"

    def _daemon(self, kind: str, cfg: Path, name: str) -> Daemon:
        daemon = Daemon(kind, cfg, self.logs / f"{name}.log")
        self.daemons.append(daemon)
        return daemon

    async def start_nodes(self) -> dict[str, Daemon]:
        """Start every node daemon and wait until each has logged node_started."""
        nodes = {identity: self.node(identity).start() for identity in self.identities}
        for daemon in nodes.values():
            await daemon.wait_for("node_started", within=60)
        return nodes

    def client_env(self, name: str = CLIENT_NAME) -> dict[str, str]:
        """Environment for an `nmc` child process signing as `name` (issued by the fleet CA if new)."""
        cfg = self.layout.client_cfg
        if name != CLIENT_NAME:
            issued = self._issued(name)
            cfg = self.root / f"client-{name}.cfg"
            cfg.write_text(f"main_collective = nmc\nplugin.nats.servers = {self.url}\n"
                           f"plugin.security.ca_file = {self.layout.ca_dir / 'ca.pem'}\n"
                           f"plugin.security.cert_file = {issued.certificate}\n"
                           f"plugin.security.key_file = {issued.key}\n", encoding="utf-8")
        return {**os.environ, "NMC_CONFIG": str(cfg), "HOME": str(self.root), "NO_COLOR": "1"}

    def _issued(self, name: str) -> pki.IssuedPaths:
        issued = pki.issued_paths(self.layout.ca_dir, name)
        if not issued.certificate.exists():
            pki.issue(self.layout.ca_dir, name, roles=("user",))
        return issued

    def signer(self, name: str = CLIENT_NAME) -> Signer:
        """A Signer for `name` (issued by the fleet CA if new), for in-test FleetClients."""
        issued = self._issued(name)
        return Signer.from_pem(issued.certificate.read_bytes(), issued.key.read_bytes())

    def verifier(self) -> Verifier:
        """A Verifier trusting the fleet CA."""
        return Verifier.from_pem((self.layout.ca_dir / "ca.pem").read_bytes())

    def stop_all(self) -> None:
        """Teardown: SIGKILL whatever still runs (tests stop what they want stopped cleanly themselves)."""
        for daemon in self.daemons:
            daemon.ensure_stopped()


class NmcCommand:
    """`nmc ARGS` as a child process whose stderr can be watched while it runs."""

    def __init__(self, env: Mapping[str, str], *args: str, workdir: Path) -> None:
        self.args = args
        self.out_path = workdir / f"nmc-{os.getpid()}-{time.monotonic_ns()}.out"
        self.err_path = self.out_path.with_suffix(".err")
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen([*NMC, *args], env=dict(env), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)

    def stderr(self) -> str:
        """What it wrote to stderr so far."""
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    async def wait_stderr(self, text: str, within: float = 60.0, count: int = 1) -> None:
        """Until `text` occurs `count` times in its stderr; fails at once if it exited first."""
        async def seen() -> bool:
            if self.stderr().count(text) >= count:
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"nmc {' '.join(self.args)} exited ({self.proc.returncode}) before writing "
                                     f"{text!r} {count}x:\n{self.stderr()[-3000:]}")
            return False

        await until(seen, within, f"{text!r} on the stderr of nmc {' '.join(self.args)}")

    def ensure_stopped(self) -> None:
        """Teardown: kill it (thawing it first, in case a test froze it) if it still runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    async def finish(self, within: float = 120.0) -> tuple[int, str, str]:
        """Wait for the exit: (exit code, stdout, stderr)."""
        async def ended() -> bool:
            return self.proc.poll() is not None

        try:
            await until(ended, within, f"nmc {' '.join(self.args)} to finish")
        finally:
            self.ensure_stopped()
        return (self.proc.returncode, self.out_path.read_text(encoding="utf-8", errors="replace"), self.stderr())


async def nmc(env: Mapping[str, str], *args: str, workdir: Path, within: float = 120.0) -> tuple[int, str, str]:
    """Run `nmc ARGS` to its end without blocking the event loop: (exit code, stdout, stderr)."""
    return await NmcCommand(env, *args, workdir=workdir).finish(within)
