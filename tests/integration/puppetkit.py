"""Real `puppet apply` sites for tests: one set of Puppet directories per node under tmp_path.

Each node's manifest has one `exec` that appends `date +%s.%N` to the node's
`starts` file, sleeps, then appends to `ends`: the windows in which Puppet
itself was applying, in Puppet's own clock, independent of nmc's bookkeeping.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nmc.ops import pki
from nmc.services.agents import BUILTIN_AGENTS
from nmc.services.agents.puppetstate import pid_alive

MANIFEST = """\
exec {{ 'nmc-test-window':
  command  => "date +%s.%N >> {starts}; sleep {sleep}; date +%s.%N >> {ends}",
  provider => shell,
  timeout  => 0,
}}
"""
DIRS = ("vardir", "confdir", "logdir", "rundir", "publicdir", "codedir")


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one instant (an end before a start at the same instant)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    busy = peak = 0
    for _, delta in events:
        busy += delta
        peak = max(peak, busy)
    return peak


@dataclass
class PuppetNode:
    """One node's Puppet directories, manifest and the windows its runs left."""

    identity: str
    root: Path
    sleep: float = 1.0

    def __post_init__(self) -> None:
        for name in DIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.manifest.write_text(MANIFEST.format(starts=self.starts, ends=self.ends, sleep=self.sleep),
                                 encoding="utf-8")

    def dir(self, name: str) -> Path:
        """One of the Puppet directories (vardir, confdir, ...)."""
        return self.root / name

    @property
    def manifest(self) -> Path:
        return self.root / "site.pp"

    @property
    def starts(self) -> Path:
        return self.root / "starts"

    @property
    def ends(self) -> Path:
        return self.root / "ends"

    @property
    def statedir(self) -> Path:
        return self.dir("vardir") / "state"

    @property
    def summary(self) -> Path:
        return self.dir("publicdir") / "last_run_summary.yaml"

    def dir_args(self) -> list[str]:
        """--vardir ... --codedir ... for any puppet command on this node."""
        return [arg for name in DIRS for arg in (f"--{name}", str(self.dir(name)))]

    def settings(self) -> dict[str, str]:
        """plugin.puppet.* for this node: masterless `puppet apply` of its own site.pp."""
        return {"command": shlex.join(["puppet", "apply", *self.dir_args(), str(self.manifest)]),
                "statedir": str(self.statedir), "summary": str(self.summary),
                "pidfile": str(self.dir("rundir") / "agent.pid")}

    def windows(self) -> list[tuple[float, float]]:
        """(start, end) of every finished exec, from Puppet's own runs."""
        starts = self.starts.read_text().split() if self.starts.exists() else []
        ends = self.ends.read_text().split() if self.ends.exists() else []
        return [(float(s), float(e)) for s, e in zip(starts, ends)]

    def lastrun(self) -> int:
        """time.last_run of the summary Puppet wrote; 0 when it never ran."""
        if not self.summary.exists():
            return 0
        return int(yaml.safe_load(self.summary.read_text())["time"]["last_run"])

    def run_pid(self) -> int | None:
        """The PID in Puppet's run lock, if the file is there."""
        lock = self.statedir / "agent_catalog_run.lock"
        try:
            return int(lock.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


@dataclass
class PuppetSite:
    """Makes PuppetNodes under `root` and starts them as fleet nodes with the puppet agent."""

    root: Path
    fleet: Any
    nodes: dict[str, PuppetNode] = field(default_factory=dict)

    def make(self, identity: str, sleep: float = 1.0) -> PuppetNode:
        """Directories and manifest only (for `nmc serve node` configs or plain puppet commands)."""
        node = PuppetNode(identity, self.root / identity, sleep)
        self.nodes[identity] = node
        return node

    async def add(self, identity: str, facts: dict[str, Any] | None = None, sleep: float = 1.0) -> PuppetNode:
        """A fleet node whose puppet agent runs this node's own `puppet apply`."""
        node = self.make(identity, sleep)
        await self.fleet.add(identity, facts or {}, agents=BUILTIN_AGENTS,
                             agent_settings={"puppet": node.settings()})
        return node

    async def stop_runs(self) -> None:
        """End every Puppet run still going (each in its own process group), and wait until they are gone."""
        runs = [(node, pid) for node in self.nodes.values() if (pid := node.run_pid()) is not None and pid_alive(pid)]
        for _, pid in runs:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        # Bounded wait for what the agent does when its run ended (reaped, lock given up), so no
        # child is left for an event loop that is about to close.
        await wait_until(lambda: all(node.run_pid() != pid for node, pid in runs), 15, "killed runs to be reaped",
                         interval=0.05)


async def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll an async or plain predicate until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def client_env_for(url: str, ca_dir: Path, home: Path, *, clean: bool = False) -> dict[str, str]:
    """Environment for an `nmc` child process signing as `admin` of `ca_dir` against `url` (NMC_* dropped if `clean`)."""
    issued = pki.issued_paths(ca_dir, "admin")
    cfg = home / "client.cfg"
    cfg.write_text(f"main_collective = nmc\nplugin.nats.servers = {url}\n"
                   f"plugin.security.ca_file = {ca_dir / 'ca.pem'}\n"
                   f"plugin.security.cert_file = {issued.certificate}\nplugin.security.key_file = {issued.key}\n",
                   encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not (clean and k.startswith("NMC_"))}
    return {**env, "NMC_CONFIG": str(cfg), "HOME": str(home)}


async def run_nmc(env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    """Run `nmc ARGS` without blocking the event loop the nodes answer from."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nmc", *args, env=dict(env),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
