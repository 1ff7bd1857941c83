"""Benchmark: how close `nmc` starts to the bare cost of importing what a command needs.

For each case, alternating runs of
- the bare import of the libraries that command really needs (`python -c "import click"`
  for `--version` and `--help`; nats-py, cryptography, click, structlog and PyYAML for a
  fleet command such as `nmc ping --help`, which loads the fleet code), and
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

Usage: python bench/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import env_for, machine

CASES = [
    ("nmc --version", ["--version"], "import click"),
    ("nmc --help", ["--help"], "import click"),
    ("nmc ping --help", ["ping", "--help"], "import nats, cryptography, click, structlog, yaml"),
]


# What the client path needs from libraries (nats-py brings asyncio and ssl); PyYAML and RE2 it does not need.
CLIENT_PATH_IMPORTS = "import nats, cryptography.x509, click, structlog"

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


def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="runs of each command (alternating, after one warm-up)")
    args = ap.parse_args()
    env = env_for()
    # As an installed nmc starts: from its cached bytecode. With PYTHONDONTWRITEBYTECODE set (as on some CI and
    # dev machines) a module edited since its .pyc was written would be compiled again on every run, and the
    # figures would measure the compiler; the warm-up run of each case writes the .pyc files instead.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    print(f"start-up, medians of {args.runs} runs on {machine()}")
    for label, nmc_args, imports in CASES:
        bare_argv = [sys.executable, "-c", imports]
        nmc_argv = [sys.executable, "-m", "nmc", *nmc_args]
        _wall(bare_argv, env), _wall(nmc_argv, env)  # warm the page cache
        bare, full = [], []
        for _ in range(args.runs):
            bare.append(_wall(bare_argv, env))
            full.append(_wall(nmc_argv, env))
        b, f = statistics.median(bare), statistics.median(full)
        print(f"  {label:<18} {f:7.1f} ms   bare `{imports}` {b:7.1f} ms   ratio {f / b:4.2f}")
    client_path(args.runs, env)
    codec(args.runs)


def _client_path_run(config: Path, env: dict[str, str]) -> tuple[float, list[float]]:
    """One child run: its wall time (ms) and the duration of each phase (ms)."""
    started = time.time()
    out = subprocess.run([sys.executable, "-c", CLIENT_PATH_CHILD, str(config)], env=env, capture_output=True,
                         text=True, check=True)
    ended = time.time()
    stamps = [started, *json.loads(out.stdout.strip().splitlines()[-1]), ended]
    return (ended - started) * 1000, [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])]


def client_path(runs: int, env: dict[str, str]) -> None:
    """`nmc ping` up to its connect against the bare import of what it needs, then each phase's median."""
    from nmc.ops.fleet.dev import DevLayout, write_fleet
    from nmc.transport.logs import configure_logging

    configure_logging(json=False, level="warning")  # stderr: structlog's default would print on stdout
    root = Path(tempfile.mkdtemp(prefix="nmc-startup-"))
    try:
        layout = DevLayout(root)
        write_fleet(layout, 0, "tls://127.0.0.1:4222")  # the CA, CRL and client.cfg of `nmc dev up`; no broker
        bare_argv = [sys.executable, "-c", CLIENT_PATH_IMPORTS]
        _wall(bare_argv, env), _client_path_run(layout.client_cfg, env)  # warm the page cache
        bare, full, phases = [], [], []
        for _ in range(runs):
            bare.append(_wall(bare_argv, env))
            wall, parts = _client_path_run(layout.client_cfg, env)
            full.append(wall)
            phases.append(parts)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    b, f = statistics.median(bare), statistics.median(full)
    print(f"  {'nmc ping to connect':<18} {f:7.1f} ms   bare `{CLIENT_PATH_IMPORTS}` {b:7.1f} ms   ratio {f / b:4.2f}")
    for i, name in enumerate(CLIENT_PHASES):
        print(f"    {name:<26} {statistics.median(p[i] for p in phases):7.2f} ms")


def codec(runs: int) -> None:
    """Encode and decode of a typical request and reply (medians of `runs` timeit rounds), in microseconds."""
    from nmc.protocol.envelope import Reply, Request
    from nmc.protocol.status import Status

    request = Request(id="5f0c6a4e9b2d4c1f8e7a6b5c4d3e2f10", collective="nmc", agent="rpcutil", action="ping",
                      caller="cert=admin", sender="workstation.example.net", time=time.time(), ttl=60.0,
                      data={}, filter="country=us and role=web")
    reply = Reply(request_id=request.id, identity="node17.example.net", status=Status.OK, message="OK",
                  time=time.time(), data={"pong": int(time.time()), "load": [0.12, 0.3, 0.25],
                                          "facts": {"country": "us", "role": "web"}})
    cases = [("request", request, Request), ("reply", reply, Reply)]
    print(f"  JSON codec, medians of {runs} rounds (us per message)")
    for name, value, cls in cases:
        body = value.to_bytes()
        plain = json.loads(body)
        figures = {
            "encode": lambda v=value: v.to_bytes(),
            "decode": lambda b=body, c=cls: c.from_bytes(b),
            "json.dumps": lambda o=plain: json.dumps(o, separators=(",", ":")).encode(),
            "json.loads": lambda b=body: json.loads(b),
        }
        shown = []
        for label, fn in figures.items():
            loops = 2000
            rounds = [timeit.timeit(fn, number=loops) / loops * 1e6 for _ in range(runs)]
            shown.append(f"{label} {statistics.median(rounds):5.1f}")
        print(f"    {name:<8} ({len(body)} bytes)  " + "   ".join(shown))


if __name__ == "__main__":
    main()
