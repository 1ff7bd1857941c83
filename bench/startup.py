"""Benchmark: how close `nmc` starts to the bare cost of importing what a command needs.

For each case, alternating runs of
- the bare import of the libraries that command really needs (`python -c "import click"`
  for `--version` and `--help`; nats-py, cryptography, click, structlog and PyYAML for a
  fleet command such as `nmc ping --help`, which loads the fleet code), and
- the real command (`python -m nmc ...`, as the console script runs it),
then the medians and their ratio. The target (issue 16) is `nmc --version` <= 1.2 x the
bare import. Both include the interpreter's own start-up, as a user's shell sees it.

Usage: python bench/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _common import env_for, machine

CASES = [
    ("nmc --version", ["--version"], "import click"),
    ("nmc --help", ["--help"], "import click"),
    ("nmc ping --help", ["ping", "--help"], "import nats, cryptography, click, structlog, yaml"),
]


def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="runs of each command (alternating, after one warm-up)")
    args = ap.parse_args()
    env = env_for()
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


if __name__ == "__main__":
    main()
