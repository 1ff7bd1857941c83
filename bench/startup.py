"""Benchmark: how close `nmc` starts to the bare cost of importing what a command needs.

For each case, alternating runs of
- the bare import of the libraries that command really needs (`python -c "import click"`
  for `--version` and `--help`; nats-py, cryptography's x509, click and structlog for a
  fleet command such as `nmc ping --help`, which loads the fleet code: before 2026-12-03 this
  was nats, cryptography, click, structlog and PyYAML, but `nmc ping` loads no PyYAML and does
  load cryptography.x509), and
- the real command (`python -m nmc ...`, as the console script runs it),
then the medians and their ratio. The target (issue 16) is `nmc --version` <= 1.2 x the
bare import. Both include the interpreter's own start-up, as a user's shell sees it.

Then, in the same run, the client path of a real command up to the point where it would
connect: a child process does what `nmc ping` does before its first byte goes to the broker
(import the CLI and the `ping` command module through the lazy group, load client.cfg and
plugin.d, the client's settings, the certificate and key (Signer), the CA bundle and CRL
(Verifier), the TLS context), on the files of a throwaway dev fleet (`write_fleet`, no broker
started). Its wall time is compared with the bare import of what that path needs (nats-py,
cryptography's x509, click, structlog), and each phase's median is printed, from time stamps
the child takes (`time.time()`; "python start" is from the parent's spawn to the child's first
line, "exit" from its last stamp to the parent seeing it end).

Last, the JSON codec (nmc.protocol.envelope over nmc.protocol.codec): encode and decode of a
typical request and reply, in microseconds, next to plain `json.dumps`/`json.loads`.

With `--against DIR` (another checkout of nmc, e.g. `git worktree add /tmp/startup-base
<commit>`), every measured command also runs from DIR, alternating with this checkout's
runs, so a before/after comparison on a busy machine sees the same load on both sides.
Each line also gives the medians of the children's CPU time (user + system), which a busy
machine disturbs less than wall time.

Usage: python bench/startup.py [--runs 15] [--against DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import env_for, machine

CASES = [
    ("nmc --version", ["--version"], "import click"),
    ("nmc --help", ["--help"], "import click"),
    ("nmc ping --help", ["ping", "--help"], "import nats, cryptography.x509, click, structlog"),
]


# What the client path needs from libraries (nats-py brings asyncio and ssl); PyYAML and RE2 it does not need.
CLIENT_PATH_IMPORTS = "import nats, cryptography.x509, click, structlog"

# The codec child: prints {case: {figure: microseconds per message}} of one timeit round each.
CODEC_CHILD = """
import json, time, timeit
from nmc.protocol.envelope import Reply, Request
from nmc.protocol.status import Status
now = 1764800000.25
request = Request(id="5f0c6a4e9b2d4c1f8e7a6b5c4d3e2f10", collective="nmc", agent="rpcutil", action="ping",
                  caller="cert=admin", sender="workstation.example.net", time=now, ttl=60.0, data={},
                  filter="country=us and role=web")
reply = Reply(request_id=request.id, identity="node17.example.net", status=Status.OK, message="OK", time=now,
              data={"pong": 1764800000, "load": [0.12, 0.3, 0.25], "facts": {"country": "us", "role": "web"}})
out = {}
for name, value, cls in (("request", request, Request), ("reply", reply, Reply)):
    body = value.to_bytes()
    plain = json.loads(body)
    figures = {"encode": lambda: value.to_bytes(), "decode": lambda: cls.from_bytes(body),
               "json.dumps": lambda: json.dumps(plain, separators=(",", ":")).encode(),
               "json.loads": lambda: json.loads(body)}
    out[name] = {"bytes": len(body), **{k: timeit.timeit(fn, number=2000) / 2000 * 1e6 for k, fn in figures.items()}}
print(json.dumps(out))
"""

# The child: `nmc ping` up to its connect, with a time stamp after each phase (printed as JSON).
# The order is that of nmc.cli.fleet_cmds.ping -> nmc.cli.common.load_client_config -> client_session.
CLIENT_PATH_CHILD = """
import time
stamps = [time.time()]
import json, sys
import click
from nmc.cli.main import cli
root = click.Context(cli, obj={"config_path": sys.argv[1], "debug": False})
ping = cli.get_command(root, "ping")
stamps.append(time.time())
from nmc.cli.common import build_filter, load_client_config
from nmc.ops.config.settings import (client_servers, client_settings, connect_timeout, load_signer,
                                     load_verifier, tls_context)
build_filter((), (), (), (), (), ())
config = load_client_config(click.Context(ping, parent=root))
stamps.append(time.time())
client_settings(config)
stamps.append(time.time())
load_signer(config)
stamps.append(time.time())
load_verifier(config)
stamps.append(time.time())
client_servers(config), tls_context(config), connect_timeout(config)
stamps.append(time.time())
print(json.dumps(stamps))
"""
CLIENT_PHASES = ("python start", "import CLI + ping module", "client.cfg + plugin.d", "client settings",
                 "Signer (cert + key)", "Verifier (CA + CRL)", "TLS context", "exit")


def _cpu() -> float:
    """CPU time (user + system, ms) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (ms) of one child run."""
    cpu, started = _cpu(), time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000, _cpu() - cpu


def _wall(argv: list[str], env: dict[str, str]) -> float:
    return _run(argv, env)[0]


def _line(label: str, full: list[tuple[float, float]], imports: str, bare: list[tuple[float, float]],
          tree: str) -> str:
    """One result line: wall-time medians and ratio, then the same for CPU time (steadier on a busy machine)."""
    f, b = statistics.median(w for w, _ in full), statistics.median(w for w, _ in bare)
    fc, bc = statistics.median(c for _, c in full), statistics.median(c for _, c in bare)
    return (f"  {label:<18} {f:7.1f} ms   bare `{imports}` {b:7.1f} ms   ratio {f / b:4.2f}"
            f"   (cpu {fc:6.1f} / {bc:6.1f} ms, ratio {fc / bc:4.2f}){tree}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="runs of each command (alternating, after one warm-up)")
    ap.add_argument("--against", type=Path, default=None, metavar="DIR",
                    help="another nmc checkout to time in the same runs, alternating with this one")
    args = ap.parse_args()
    # As an installed nmc starts: from its cached bytecode. With PYTHONDONTWRITEBYTECODE set (as on some CI and
    # dev machines) a module edited since its .pyc was written would be compiled again on every run, and the
    # figures would measure the compiler; the warm-up run of each case writes the .pyc files instead.
    trees = {"": _bytecode(env_for())}
    if args.against is not None:
        other = args.against.resolve()
        if not (other / "nmc" / "__init__.py").is_file():
            raise SystemExit(f"--against {other}: not an nmc checkout")
        trees[f" [{other}]"] = _bytecode({**env_for(), "PYTHONPATH": str(other)})
    bare_env = trees[""]
    print(f"start-up, medians of {args.runs} runs on {machine()}")
    for label, nmc_args, imports in CASES:
        bare_argv = [sys.executable, "-c", imports]
        nmc_argv = [sys.executable, "-m", "nmc", *nmc_args]
        _wall(bare_argv, bare_env), [_wall(nmc_argv, env) for env in trees.values()]  # warm the page cache
        bare: list[tuple[float, float]] = []
        full: dict[str, list[tuple[float, float]]] = {tree: [] for tree in trees}
        for _ in range(args.runs):
            bare.append(_run(bare_argv, bare_env))
            for tree, env in trees.items():
                full[tree].append(_run(nmc_argv, env))
        for tree, runs in full.items():
            print(_line(label, runs, imports, bare, tree))
    client_path(args.runs, trees)
    codec(args.runs, trees)


def _bytecode(env: dict[str, str]) -> dict[str, str]:
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _client_path_run(config: Path, env: dict[str, str]) -> tuple[tuple[float, float], list[float]]:
    """One child run: its wall and CPU time (ms) and the duration of each phase (ms)."""
    cpu, started = _cpu(), time.time()
    out = subprocess.run([sys.executable, "-c", CLIENT_PATH_CHILD, str(config)], env=env, capture_output=True,
                         text=True, check=True)
    ended = time.time()
    stamps = [started, *json.loads(out.stdout.strip().splitlines()[-1]), ended]
    return ((ended - started) * 1000, _cpu() - cpu), [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])]


def client_path(runs: int, trees: dict[str, dict[str, str]]) -> None:
    """`nmc ping` up to its connect against the bare import of what it needs, then each phase's median."""
    from nmc.ops.fleet.dev import DevLayout, write_fleet
    from nmc.transport.logs import configure_logging

    configure_logging(json=False, level="warning")  # stderr: structlog's default would print on stdout
    bare_env = trees[""]
    root = Path(tempfile.mkdtemp(prefix="nmc-startup-"))
    try:
        layout = DevLayout(root)
        write_fleet(layout, 0, "tls://127.0.0.1:4222")  # the CA, CRL and client.cfg of `nmc dev up`; no broker
        bare_argv = [sys.executable, "-c", CLIENT_PATH_IMPORTS]
        _wall(bare_argv, bare_env), [_client_path_run(layout.client_cfg, env) for env in trees.values()]  # warm-up
        bare: list[tuple[float, float]] = []
        full: dict[str, list[tuple[float, float]]] = {tree: [] for tree in trees}
        phases: dict[str, list[list[float]]] = {tree: [] for tree in trees}
        for _ in range(runs):
            bare.append(_run(bare_argv, bare_env))
            for tree, env in trees.items():
                times, parts = _client_path_run(layout.client_cfg, env)
                full[tree].append(times)
                phases[tree].append(parts)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for tree in trees:
        print(_line("nmc ping to connect", full[tree], CLIENT_PATH_IMPORTS, bare, tree))
        for i, name in enumerate(CLIENT_PHASES):
            print(f"    {name:<26} {statistics.median(p[i] for p in phases[tree]):7.2f} ms")


def codec(runs: int, trees: dict[str, dict[str, str]]) -> None:
    """Encode and decode of a typical request and reply (medians of `runs` children), in microseconds."""
    rounds: dict[str, list[dict[str, dict[str, float]]]] = {tree: [] for tree in trees}
    for _ in range(runs):
        for tree, env in trees.items():
            out = subprocess.run([sys.executable, "-c", CODEC_CHILD], env=env, capture_output=True, text=True,
                                 check=True)
            rounds[tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"  JSON codec, medians of {runs} rounds of 2000 (us per message)")
    for tree, results in rounds.items():
        for name in ("request", "reply"):
            shown = [f"{label} {statistics.median(r[name][label] for r in results):5.1f}"
                     for label in ("encode", "decode", "json.dumps", "json.loads")]
            print(f"    {name:<8} ({results[0][name]['bytes']} bytes)  " + "   ".join(shown) + tree)


if __name__ == "__main__":
    main()
