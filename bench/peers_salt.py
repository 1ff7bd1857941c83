"""Benchmark: nmc vs Salt side by side, 20 nodes/minions with the same facts on 127.0.0.1.

Installs Salt from PyPI into its own virtualenv under a temporary directory
(or reuses --salt-venv PATH), starts a salt-master and N salt-minions, and an
nmc fleet of N separate `nmc serve node` processes (secure broker: TLS,
verify_and_map, per-role permissions; `nmc serve policy` and `nmc serve audit`;
the shell agent enabled). Facts = grains: role cycles web,web,db,db,cache and
dc alternates east/west, as in `nmc dev up`.

Then, rotating which command goes first each round, it times whole commands
(CLI start-up included): ping all; run /bin/true on all; target role=web;
compound role=db and dc=east; batch 3 x `sleep 1`; ping all with one node
stopped (Salt with its default timeouts: it waits for the missing minion).
Salt runs each case three ways: with its default outputter and with
`--out json` (both print each minion's reply as it arrives: Salt's normal
invocations), and with `--out json --static` (waits and prints everything at
the end). The "salt" figure is the faster median of the two normal ones, per
case, and the report says which; the --static figure is kept in its own,
labelled column. Every command's replies are counted from what it prints; a
wrong count is an error, not a figure. Prints each median wall time and the
ratios nmc/Salt, then the resident memory of one node agent vs one
salt-minion. Every process it started is stopped, also on Ctrl-C and errors.

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
import re
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

from _salt_fleet import SALT_OUTPUTS, SaltFleet, ensure_salt_venv, salt_version
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
from nmc.transport.logs import configure_logging

# Facts that become salt grains; the OS facts stay out because they would override Salt's own core grains.
GRAIN_FACTS = ("role", "dc", "country", "environment", "customer")
COMMAND_TIMEOUT = 300.0

# What each measured command is: "nmc", and salt with each of SALT_OUTPUTS (key "salt-<output>").
SALT_TOOLS = {f"salt-{output}": output for output in SALT_OUTPUTS}
TOOLS = ("nmc", *SALT_TOOLS)
NORMAL_SALT = ("salt-default", "salt-json")  # Salt's normal invocations; the faster is "salt"


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

def nmc_pinged(data: dict[str, Any]) -> set[str]:
    """Nodes that replied to `nmc ping --json` (its parsed output)."""
    return {r["sender"] for r in data["replies"]}


def nmc_ok(data: dict[str, Any]) -> set[str]:
    """Nodes that replied with status 0 (OK) to `nmc rpc ... --json` (its parsed output)."""
    return {r["sender"] for r in data["replies"] if r.get("statuscode") == 0}


def salt_pinged(returns: dict[str, Any]) -> set[str]:
    """Minions that returned True (test.ping); a missing minion is absent or a 'did not return' string."""
    return {k for k, v in returns.items() if v is True}


def salt_silent_ok(returns: dict[str, Any]) -> set[str]:
    """Minions whose cmd.run printed nothing: /bin/true and `sleep 1` succeed silently, errors are text."""
    return {k for k, v in returns.items() if v == ""}


# --- reading salt's output ------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def salt_json_documents(out: str) -> dict[str, Any]:
    """{minion: return} from `--out json` (one document per minion, as they arrive) or `--static` (one).

    Lines that are not JSON (a batch run's "Executing run on [...]") are skipped; the documents are merged.
    ValueError if there is no document or one is not an object.
    """
    decoder = json.JSONDecoder()
    returns: dict[str, Any] = {}
    documents, i = 0, 0
    while i < len(out):
        if out[i].isspace():
            i += 1
        elif out[i] == "{":
            doc, i = decoder.raw_decode(out, i)
            if not isinstance(doc, dict):
                raise ValueError("a JSON document that is not an object")
            returns.update(doc)
            documents += 1
        else:  # not JSON: skip the rest of the line
            nl = out.find("\n", i)
            i = len(out) if nl < 0 else nl + 1
    if not documents:
        raise ValueError("no JSON document")
    return returns


def salt_nested(out: str) -> dict[str, Any]:
    """{minion: return} from Salt's default (nested) outputter, which prints each reply as it arrives.

    A reply is `minion:` at column 0 and its value indented by 4 below: `True`/`False` for test.ping,
    cmd.run's output as text (no line at all when it printed nothing), or a 'Minion did not return' line.
    Colour codes are removed; other unindented lines (a batch run's "Executing run on [...]") are skipped.
    """
    returns: dict[str, list[str]] = {}
    current: str | None = None
    for raw in out.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        if not line:
            continue
        if line.startswith("    ") and current is not None:
            returns[current].append(line[4:])
        elif not line[0].isspace() and line.endswith(":") and " " not in line:
            current = line[:-1]
            returns[current] = []
        else:
            current = None
    scalars = {"True": True, "False": False}
    return {k: scalars.get(v[0], v[0]) if len(v) == 1 else "\n".join(v) for k, v in returns.items()}


def parse_output(tool: str, out: str) -> dict[str, Any]:
    """A measured command's stdout as data: nmc's JSON, or salt's {minion: return} for its output option."""
    if tool == "nmc":
        data = json.loads(out)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    return salt_nested(out) if SALT_TOOLS[tool] == "default" else salt_json_documents(out)


@dataclass
class Case:
    """One row of the comparison: the same question asked of both tools, and how many answers are right."""

    key: str
    title: str
    nmc_args: tuple[str, ...]
    salt_args: tuple[str, ...]
    nmc_answered: Callable[[dict[str, Any]], set[str]]
    salt_answered: Callable[[dict[str, Any]], set[str]]
    expected: set[str]
    stops_a_node: bool = False
    times: dict[str, list[float]] = field(default_factory=lambda: {tool: [] for tool in TOOLS})

    def fastest_salt(self) -> str:
        """Which of Salt's normal invocations had the lower median wall time in this case."""
        return min(NORMAL_SALT, key=lambda tool: median_or_none(self.times[tool]) or float("inf"))


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
    """Run `case` with one tool ("nmc" or a SALT_TOOLS key), check its reply count; returns the wall time."""
    if tool == "nmc":
        argv, env, answered = nmc.command(*case.nmc_args), nmc.env, case.nmc_answered
    else:
        argv, env, answered = salt.command(*case.salt_args, output=SALT_TOOLS[tool]), None, case.salt_answered
    wall, out, err = timed(argv, env)
    last = (err.strip().splitlines() or out.strip().splitlines() or ["no output"])[-1][:200]
    try:
        data = parse_output(tool, out)
        got = answered(data)
    except (ValueError, KeyError, TypeError, AttributeError):  # json.JSONDecodeError is a ValueError
        raise BenchError(f"{tool} {case.key}: output is not in the expected form ({last}): "
                         f"{shlex.join(argv)}") from None
    if got != case.expected:
        missing, extra = sorted(case.expected - got), sorted(got - case.expected)
        raise BenchError(f"{tool} {case.key}: {len(got)} right replies, expected {len(case.expected)} "
                         f"(missing {missing or '-'}, unexpected {extra or '-'}, wrong answers "
                         f"{_wrong_answers(data, got)}; last line: {last}): {shlex.join(argv)}")
    return wall


def _wrong_answers(data: dict[str, Any], right: set[str]) -> str:
    """The answers that did not count, shortened: tells a timeout ({} from salt) from a failure."""
    if "replies" in data:
        wrong = {r.get("sender"): r.get("statusmsg") for r in data["replies"] if r.get("sender") not in right}
    else:
        wrong = {k: v for k, v in data.items() if k not in right}
    return (json.dumps(wrong, default=str)[:300] or "-") if wrong else "-"


def run_round(rnd: int, cases: list[Case], nmc: NmcFleet, salt: SaltFleet, record: bool) -> None:
    """Every case once per command; who goes first rotates by round, so none always gets a warmer machine."""
    order = TOOLS[rnd % len(TOOLS):] + TOOLS[:rnd % len(TOOLS)]
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
        line = "  ".join(f"{c.key} " + "/".join(f"{c.times[tool][-1]:.2f}" for tool in TOOLS) for c in cases)
        print(f"round {rnd + 1} ({'/'.join(TOOLS)} s): {line}", file=sys.stderr, flush=True)


def warm_up(cases: list[Case], nmc: NmcFleet, salt: SaltFleet) -> None:
    """One discarded run of the quick cases per command: page cache, first connections, salt's job cache."""
    for case in cases:
        if case.key in ("ping", "true", "web", "compound"):
            for tool in TOOLS:
                run_one(tool, case, nmc, salt)


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
    rows: list[dict[str, Any]] = []
    for case in cases:
        medians = {tool: median_or_none(case.times[tool]) for tool in TOOLS}
        fastest = case.fastest_salt()
        n, s, st = medians["nmc"], medians[fastest], medians["salt-static"]
        salt_commands = {tool: "salt " + shlex.join((*case.salt_args, *SALT_OUTPUTS[output]))
                         for tool, output in SALT_TOOLS.items()}
        rows.append({
            "case": case.key, "title": case.title, "replies": len(case.expected),
            "nmc_median_s": n,
            # "salt": Salt's fastest normal invocation in this case (default outputter or --out json)
            "salt_median_s": s, "salt_invocation": fastest, "salt_command": salt_commands[fastest],
            "ratio": n / s if n is not None and s else None,
            "salt_static_median_s": st, "salt_static_command": salt_commands["salt-static"],
            "ratio_static": n / st if n is not None and st else None,
            "salt_default_median_s": medians["salt-default"], "salt_json_median_s": medians["salt-json"],
            "nmc_command": "nmc " + shlex.join(case.nmc_args),
            "commands": {"nmc": "nmc " + shlex.join(case.nmc_args), **salt_commands},
            "runs_s": {tool: case.times[tool] for tool in TOOLS},
        })
    if args.json:
        print(json.dumps({"machine": info, "nodes": args.nodes, "runs": args.runs, "cases": rows, "rss_mib": mem},
                         indent=2))
        return
    print(f"\nnmc vs {info['salt']}, {args.nodes} nodes/minions on 127.0.0.1, medians of {args.runs} runs "
          f"(whole command, CLI start-up included; which command goes first rotates per round)")
    print(f"machine: {info['nproc']} cpus, {info['ram_gib']} GiB, Linux {info['kernel']}, Python {info['python']}, "
          f"{info['nats_server']}, {info['date']}\n")
    print("columns (median wall time, s):")
    print("  nmc          nmc ... --json")
    print("  salt default salt ... with its default outputter (prints each reply as it arrives)")
    print("  salt json    salt ... --out json (one JSON document per reply, as they arrive)")
    print("  salt static  salt ... --out json --static (waits, prints every reply at the end)")
    print("  fastest      Salt's fastest normal invocation in this case: salt default or salt json")
    print("  nmc/salt     nmc / fastest (the comparison)")
    print("  nmc/static   nmc / salt static\n")
    print(f"{'case':<34} {'nmc':>6} {'salt default':>13} {'salt json':>10} {'salt static':>12}  {'fastest':<12} "
          f"{'nmc/salt':>9} {'nmc/static':>11}")
    for row in rows:
        fastest = {"salt-default": "salt default", "salt-json": "salt json"}[row["salt_invocation"]]
        print(f"{row['title']:<34} {row['nmc_median_s']:>6.2f} {row['salt_default_median_s']:>13.2f} "
              f"{row['salt_json_median_s']:>10.2f} {row['salt_static_median_s']:>12.2f}  {fastest:<12} "
              f"{row['ratio']:>9.2f} {row['ratio_static']:>11.2f}")
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
        print(f"  {row['case']:<9} nmc          {row['commands']['nmc']}")
        for tool, label in (("salt-default", "salt default"), ("salt-json", "salt json"),
                            ("salt-static", "salt static")):
            print(f"  {'':<9} {label:<12} {row['commands'][tool]}")


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
    # structlog's default logger prints on stdout: the set-up's log lines (`audit_stream_created` from setup_as)
    # came before the table, and before the document of --json, which was then not valid JSON. Warnings and
    # errors go to stderr; stdout has the results only.
    configure_logging(json=False, level="warning")
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
