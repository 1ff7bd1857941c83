"""Benchmark: nmc vs Salt side by side, 20 nodes/minions with the same facts on 127.0.0.1.

Installs Salt from PyPI into its own virtualenv under a temporary directory
(or reuses --salt-venv PATH), starts a salt-master and N salt-minions, and an
nmc fleet of N separate `nmc serve node` processes (secure broker: TLS,
verify_and_map, per-role permissions; `nmc serve policy` and `nmc serve audit`;
the shell agent enabled). Facts = grains: role cycles web,web,db,db,cache and
dc alternates east/west, as in `nmc dev up`.

Then, alternating which tool goes first each round, it times whole commands
(CLI start-up included): ping all; run /bin/true on all; target role=web;
compound role=db and dc=east; batch 3 x `sleep 1`; ping all with one node
stopped (Salt with its default timeouts: it waits for the missing minion).
Every command's replies are counted; a wrong count is an error, not a figure.
Prints each tool's median wall time and the ratio nmc/Salt, then the resident
memory of one node agent vs one salt-minion. Every process it started is
stopped, also on Ctrl-C and errors.

Usage: python bench/peers_salt.py [--runs 5] [--nodes 20] [--batch 3] [--salt-venv PATH] [--keep-venv]
                                  [--salt-spec salt] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # measure this checkout

from _salt_fleet import SaltFleet, ensure_salt_venv, salt_version
from _salt_procs import (
    BenchError,
    Child,
    median_or_none,
    rss_mib,
    stop_all,
    tree_pids,
    wait_until,
)

from nmc.ops.broker.server import Broker, BrokerError, find_nats_server
from nmc.ops.fleet.dev import DevFleet, DevLayout, node_facts_for
from nmc.ops.broker.jetstream import SetupError, setup_as

# Facts that become salt grains; the OS facts stay out because they would override Salt's own core grains.
GRAIN_FACTS = ("role", "dc", "country", "environment", "customer")
COMMAND_TIMEOUT = 300.0


# --- the nmc fleet ---------------------------------------------------------------------------------

class NmcFleet:
    """A secure dev-fleet broker, `nmc serve policy|audit` and one `nmc serve node` process per node."""

    def __init__(self, root: Path, nodes: int) -> None:
        """Prepare (not start) N nodes under `root`."""
        self.layout = DevLayout(root)
        self.nodes = nodes
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(root)}
        self.broker: Broker | None = None
        self.audit: Child | None = None
        self.policy: Child | None = None
        self.node_procs: list[Child] = []

    def _nmc(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "nmc", *args]

    def start(self, timeout: float = 120.0) -> None:
        """Write CA, certs and configs (nmc.ops.fleet.dev), start broker, audit, policy and the nodes; wait for all."""
        try:
            fleet = DevFleet(self.layout, nodes=self.nodes, port=0)
            self.broker, _ = fleet.prepare()
            # As `nmc dev up`: the operator certificate creates the streams no daemon may create.
            asyncio.run(setup_as(fleet.operator_config()))
        except (BrokerError, SetupError) as exc:
            raise BenchError(f"nmc broker: {exc}") from None
        out = self.layout.root / "out"
        self.audit = Child("nmc serve audit", self._nmc("serve", "audit", "--config", str(self.layout.audit_cfg)),
                           out / "audit.out", env=self.env)
        self.policy = Child("nmc serve policy",
                            self._nmc("serve", "policy", "--config", str(self.layout.policy_cfg)),
                            out / "policy.out", env=self.env)
        for i in range(1, self.nodes + 1):
            identity = node_facts_for(i)[0]
            cfg = self.layout.node_dir(identity) / "server.cfg"
            with cfg.open("a", encoding="utf-8") as fh:
                fh.write("plugin.shell.enabled = true\n")  # /bin/true and `sleep 1` go through the shell agent
            self.node_procs.append(Child(f"nmc node {identity}", self._nmc("serve", "node", "--config", str(cfg)),
                                         out / f"{identity}.out", env=self.env))
        # Audit first (it creates the NMC_AUDIT stream), policy before the first node asks it.
        self.audit.start()
        self.policy.start()
        for node in self.node_procs:
            node.start()
        wait_until(f"{self.nodes} nmc nodes answering", lambda: self.ping_count() == self.nodes, timeout,
                   alive=self._children())

    def _children(self) -> list[Child]:
        return [c for c in (self.audit, self.policy, *self.node_procs) if c is not None]

    def command(self, *args: str) -> list[str]:
        """An `nmc` command line (python -m nmc: this checkout) with the fleet's client.cfg."""
        return self._nmc("-c", str(self.layout.client_cfg), *args)

    def ping_count(self) -> int:
        """How many nodes answer `nmc ping` right now (readiness only)."""
        try:
            done = subprocess.run(self.command("ping", "--json"), check=False, capture_output=True, text=True,
                                  env=self.env, timeout=COMMAND_TIMEOUT)
            return len(json.loads(done.stdout)["replies"])
        except (subprocess.TimeoutExpired, json.JSONDecodeError, KeyError, TypeError):
            return 0

    def stop_node(self, n: int) -> None:
        """SIGTERM node n (1-based) and wait for it to end."""
        self.node_procs[n - 1].stop()

    def restart_node(self, n: int, timeout: float = 60.0) -> None:
        """Start node n again; return once all nodes answer a ping."""
        self.node_procs[n - 1].start()
        wait_until(f"nmc node {n} answering again", lambda: self.ping_count() == self.nodes, timeout,
                   alive=self._children())

    def stop(self) -> None:
        """Nodes first (their last audit records), then policy and audit, then the broker."""
        stop_all(self.node_procs)
        stop_all([c for c in (self.policy, self.audit) if c is not None])
        if self.broker is not None:
            self.broker.stop()


# --- cases -----------------------------------------------------------------------------------------

def _nmc_replies(out: str) -> list[dict[str, Any]]:
    return list(json.loads(out)["replies"])


def nmc_pinged(out: str) -> set[str]:
    """Nodes that replied to `nmc ping --json`."""
    return {r["sender"] for r in _nmc_replies(out)}


def nmc_ok(out: str) -> set[str]:
    """Nodes that replied with status 0 (OK) to `nmc rpc ... --json`."""
    return {r["sender"] for r in _nmc_replies(out) if r.get("statuscode") == 0}


def salt_pinged(out: str) -> set[str]:
    """Minions that returned True (test.ping); a missing minion is absent or a 'did not return' string."""
    return {k for k, v in json.loads(out).items() if v is True}


def salt_silent_ok(out: str) -> set[str]:
    """Minions whose cmd.run printed nothing: /bin/true and `sleep 1` succeed silently, errors are text."""
    return {k for k, v in json.loads(out).items() if v == ""}


@dataclass
class Case:
    """One row of the comparison: the same question asked of both tools, and how many answers are right."""

    key: str
    title: str
    nmc_args: tuple[str, ...]
    salt_args: tuple[str, ...]
    nmc_answered: Callable[[str], set[str]]
    salt_answered: Callable[[str], set[str]]
    expected: set[str]
    stops_a_node: bool = False
    times: dict[str, list[float]] = field(default_factory=lambda: {"nmc": [], "salt": []})


def build_cases(nodes: int, batch: int) -> list[Case]:
    """The six cases; who must answer follows from node_facts_for (the last node is the one stopped)."""
    fleet = [node_facts_for(i)[:2] for i in range(1, nodes + 1)]
    everyone = {ident for ident, _ in fleet}
    web = {ident for ident, f in fleet if f["role"] == "web"}
    db_east = {ident for ident, f in fleet if f["role"] == "db" and f["dc"] == "east"}
    return [
        Case("ping", f"ping all ({nodes})", ("ping", "--json"), ("*", "test.ping"),
             nmc_pinged, salt_pinged, everyone),
        Case("true", f"/bin/true on all ({nodes})", ("rpc", "shell", "run", "command=/bin/true", "--json"),
             ("*", "cmd.run", "/bin/true"), nmc_ok, salt_silent_ok, everyone),
        Case("web", f"ping role=web ({len(web)})", ("ping", "-F", "role=web", "--json"),
             ("-G", "role:web", "test.ping"), nmc_pinged, salt_pinged, web),
        Case("compound", f"ping role=db and dc=east ({len(db_east)})",
             ("ping", "-S", "role=db and dc=east", "--json"), ("-C", "G@role:db and G@dc:east", "test.ping"),
             nmc_pinged, salt_pinged, db_east),
        Case("batch", f"batch {batch} x `sleep 1` ({nodes})",
             ("rpc", "shell", "run", "command=sleep 1", "--batch", str(batch), "--json"),
             ("*", "cmd.run", "sleep 1", "-b", str(batch)), nmc_ok, salt_silent_ok, everyone),
        Case("down", f"ping all, 1 stopped ({nodes - 1})", ("ping", "--json"), ("*", "test.ping"),
             nmc_pinged, salt_pinged, everyone - {fleet[-1][0]}, stops_a_node=True),
    ]


# --- measuring -------------------------------------------------------------------------------------

def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str, str]:
    """Wall time of the whole command (process start to exit), its stdout and stderr."""
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env,
                              timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"no result after {COMMAND_TIMEOUT:g} s: {shlex.join(argv)}") from None
    return time.perf_counter() - started, done.stdout, done.stderr


def run_one(tool: str, case: Case, nmc: NmcFleet, salt: SaltFleet) -> float:
    """Run `case` with one tool, check its reply count; returns the wall time."""
    if tool == "nmc":
        argv, env, answered = nmc.command(*case.nmc_args), nmc.env, case.nmc_answered
    else:
        argv, env, answered = salt.command(*case.salt_args), None, case.salt_answered
    wall, out, err = timed(argv, env)
    last = (err.strip().splitlines() or out.strip().splitlines() or ["no output"])[-1][:200]
    try:
        got = answered(out)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise BenchError(f"{tool} {case.key}: output is not the expected JSON ({last}): {shlex.join(argv)}") from None
    if got != case.expected:
        missing, extra = sorted(case.expected - got), sorted(got - case.expected)
        raise BenchError(f"{tool} {case.key}: {len(got)} right replies, expected {len(case.expected)} "
                         f"(missing {missing or '-'}, unexpected {extra or '-'}, wrong answers "
                         f"{_wrong_answers(out, got)}; last line: {last}): {shlex.join(argv)}")
    return wall


def _wrong_answers(out: str, right: set[str]) -> str:
    """The answers that did not count, shortened: tells a timeout ({} from salt) from a failure."""
    data = json.loads(out)
    if isinstance(data, dict) and "replies" in data:
        wrong = {r.get("sender"): r.get("statusmsg") for r in data["replies"] if r.get("sender") not in right}
    else:
        wrong = {k: v for k, v in data.items() if k not in right}
    return (json.dumps(wrong)[:300] or "-") if wrong else "-"


def run_round(rnd: int, cases: list[Case], nmc: NmcFleet, salt: SaltFleet, record: bool) -> None:
    """Every case once per tool; who goes first alternates by round, so neither always gets a warmer machine."""
    order = ("nmc", "salt") if rnd % 2 == 0 else ("salt", "nmc")
    last = len(salt.ids)
    for case in cases:
        if case.stops_a_node:
            nmc.stop_node(last)
            salt.stop_minion(last)
        for tool in order:
            wall = run_one(tool, case, nmc, salt)
            if record:
                case.times[tool].append(wall)
        if case.stops_a_node:  # on an error both fleets are stopped anyway
            nmc.restart_node(last)
            salt.restart_minion(last)
    if record:
        line = "  ".join(f"{c.key} {c.times['nmc'][-1]:.2f}/{c.times['salt'][-1]:.2f}" for c in cases)
        print(f"round {rnd + 1} (nmc/salt s): {line}", file=sys.stderr, flush=True)


def warm_up(cases: list[Case], nmc: NmcFleet, salt: SaltFleet) -> None:
    """One discarded run of the quick cases per tool: page cache, first connections, salt's job cache."""
    for case in cases:
        if case.key in ("ping", "true", "web", "compound"):
            run_one("nmc", case, nmc, salt)
            run_one("salt", case, nmc, salt)


def memory(nmc: NmcFleet, salt: SaltFleet) -> dict[str, float | None]:
    """Median RSS (MiB) over the N node agents and the N minions: main process and whole process tree."""
    node_pids = [c.pid for c in nmc.node_procs if c.pid is not None]
    minion_pids = [c.pid for c in salt.minions if c.pid is not None]
    server_side = [p for p in (nmc.broker.pid if nmc.broker else None,
                               nmc.policy.pid if nmc.policy else None,
                               nmc.audit.pid if nmc.audit else None) if p is not None]
    return {
        "nmc_node_main": median_or_none([rss_mib([p]) for p in node_pids]),
        "nmc_node_tree": median_or_none([rss_mib(tree_pids(p)) for p in node_pids]),
        "salt_minion_main": median_or_none([rss_mib([p]) for p in minion_pids]),
        "salt_minion_tree": median_or_none([rss_mib(tree_pids(p)) for p in minion_pids]),
        "salt_minion_tree_processes": median_or_none([float(len(tree_pids(p))) for p in minion_pids]),
        "nmc_server_side": rss_mib(p for pid in server_side for p in tree_pids(pid)),
        "salt_master_tree": rss_mib(tree_pids(salt.master.pid)) if salt.master.pid else None,
    }


# --- report ----------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    """What the figures ran on."""
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    nats = subprocess.run([find_nats_server(), "--version"], check=False, capture_output=True,
                          text=True).stdout.strip()
    return {"host": platform.node(), "nproc": os.cpu_count(), "ram_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(), "nats_server": nats,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def report(cases: list[Case], mem: dict[str, float | None], info: dict[str, Any], args: argparse.Namespace,
           nmc: NmcFleet, salt: SaltFleet) -> None:
    """The table, memory and command lines (or all of it as JSON with --json)."""
    rows = []
    for case in cases:
        n, s = median_or_none(case.times["nmc"]), median_or_none(case.times["salt"])
        rows.append({"case": case.key, "title": case.title, "replies": len(case.expected), "nmc_median_s": n,
                     "salt_median_s": s, "ratio": n / s if n is not None and s else None,
                     "nmc_runs_s": case.times["nmc"], "salt_runs_s": case.times["salt"],
                     "nmc_command": "nmc " + shlex.join(case.nmc_args),
                     "salt_command": "salt " + shlex.join((*case.salt_args, "--out", "json", "--static"))})
    if args.json:
        print(json.dumps({"machine": info, "nodes": args.nodes, "runs": args.runs, "cases": rows, "rss_mib": mem},
                         indent=2))
        return
    print(f"\nnmc vs {info['salt']}, {args.nodes} nodes/minions on 127.0.0.1, medians of {args.runs} runs "
          f"(whole command, CLI start-up included; who goes first alternates per round)")
    print(f"machine: {info['nproc']} cpus, {info['ram_gib']} GiB, Linux {info['kernel']}, Python {info['python']}, "
          f"{info['nats_server']}, {info['date']}\n")
    print(f"{'case':<34} {'nmc s':>7} {'salt s':>7} {'nmc/salt':>9}")
    for row in rows:
        print(f"{row['title']:<34} {row['nmc_median_s']:>7.2f} {row['salt_median_s']:>7.2f} {row['ratio']:>9.2f}")
    print("\n(salt with its default timeouts: timeout 5 s, gather_job_timeout 10 s; `ping all, 1 stopped` "
          "waits for them)")
    print("\nresident memory, median over the agents (MiB):")
    print(f"  {'one nmc node agent (nmc serve node)':<44} {mem['nmc_node_main']:7.1f}  "
          f"(its process tree: {mem['nmc_node_tree']:.1f})")
    print(f"  {'one salt-minion, main process':<44} {mem['salt_minion_main']:7.1f}")
    tree = f"one salt-minion, process tree ({mem['salt_minion_tree_processes']:.0f} processes)"
    print(f"  {tree:<44} {mem['salt_minion_tree']:7.1f}")
    print(f"  {'server side: nats-server + policy + audit':<44} {mem['nmc_server_side']:7.1f}  "
          f"(salt-master and its workers: {mem['salt_master_tree']:.1f})")
    print("\ncommands (nmc = python -m nmc -c client.cfg; salt = VENV/bin/salt -c CONFDIR):")
    for row in rows:
        print(f"  {row['case']:<9} {row['nmc_command']}\n  {'':<9} {row['salt_command']}")


# --- main ------------------------------------------------------------------------------------------

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, _frame: object) -> None:
    """SIGINT/SIGTERM/SIGHUP end the bench like Ctrl-C, so the finally blocks stop every child.

    Installed for SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then leaves it so.
    """
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    """Command line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="measured rounds (default 5; one warm-up before)")
    ap.add_argument("--nodes", type=int, default=20, help="nmc nodes and salt-minions (default 20)")
    ap.add_argument("--batch", type=int, default=3, help="batch size of the `sleep 1` case (default 3)")
    ap.add_argument("--salt-venv", type=Path, help="use (or create and keep) this virtualenv for Salt")
    ap.add_argument("--salt-spec", default="salt", help="what pip installs into a new venv (default: salt)")
    ap.add_argument("--keep-venv", action="store_true", help="keep the temporary Salt virtualenv and print its path")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if args.runs < 1 or args.nodes < 2 or args.batch < 1:
        ap.error("--runs >= 1, --nodes >= 2 and --batch >= 1")
    return args


def stop_everything(salt: SaltFleet, nmc: NmcFleet) -> None:
    """Stop both fleets, ignoring further Ctrl-C/SIGTERM meanwhile: a second one must not leave a daemon behind.

    Bounded anyway: each process group gets SIGKILL 20 s after SIGTERM.
    """
    print("stopping every process ...", file=sys.stderr, flush=True)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    try:
        salt.stop()
    finally:
        nmc.stop()
        for sig in _STOP_SIGNALS:
            signal.signal(sig, _interrupt)


def run(args: argparse.Namespace, run_dir: Path, venv: Path) -> None:
    """Install, start both fleets, measure, report; both fleets are stopped whatever happens."""
    ensure_salt_venv(venv, args.salt_spec)
    info = {**machine(), "salt": salt_version(venv)}
    cases = build_cases(args.nodes, args.batch)
    grains = [(ident, {k: facts[k] for k in GRAIN_FACTS})
              for ident, facts, _ in (node_facts_for(i) for i in range(1, args.nodes + 1))]
    nmc = NmcFleet(run_dir / "nmc", args.nodes)
    salt = SaltFleet(venv, run_dir / "salt", grains)
    try:
        print(f"starting {args.nodes} nmc nodes ...", file=sys.stderr, flush=True)
        nmc.start()
        print(f"starting a salt-master and {args.nodes} salt-minions ({info['salt']}) ...", file=sys.stderr,
              flush=True)
        salt.write()
        salt.start()
        print("warming up ...", file=sys.stderr, flush=True)
        warm_up(cases, nmc, salt)
        for rnd in range(args.runs):
            run_round(rnd, cases, nmc, salt, record=True)
        mem = memory(nmc, salt)
    finally:
        stop_everything(salt, nmc)
    report(cases, mem, info, args, nmc, salt)


def main() -> int:
    """Entry point: one-line errors, exit 1 on a wrong reply count or a broken setup, 130 on Ctrl-C."""
    args = parse_args()
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    run_dir = Path(tempfile.mkdtemp(prefix="nmc-peers-salt-"))
    own_venv = args.salt_venv is None
    venv = args.salt_venv.resolve() if args.salt_venv else Path(tempfile.mkdtemp(prefix="nmc-peers-salt-venv-"))
    keep_logs = False
    try:
        run(args, run_dir, venv)
        return 0
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        print(f"peers_salt: error: {exc}", file=sys.stderr)
        keep_logs = True
        return 1
    except KeyboardInterrupt:
        print("peers_salt: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        if keep_logs:
            print(f"peers_salt: configs and logs kept in {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
        if own_venv and venv.exists():
            if args.keep_venv:
                print(f"peers_salt: Salt virtualenv kept: --salt-venv {venv}", file=sys.stderr)
            else:
                shutil.rmtree(venv, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
