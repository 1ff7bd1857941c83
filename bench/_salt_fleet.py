"""The Salt side of bench/peers_salt.py: a virtualenv with Salt, one salt-master and N salt-minions on 127.0.0.1.

Nothing touches system paths: every config, key, cache, socket and log lives
under the run's temporary directory, and the daemons run as the current user
in the foreground as children of the bench (own process groups), so stopping
them is exact. Salt is never a dependency of nmc: it is installed from PyPI
into a throwaway virtualenv (or one given with --salt-venv).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from _salt_procs import BenchError, Child, stop_all, wait_until

__all__ = ["SALT_OUTPUTS", "SaltFleet", "ensure_salt_venv", "salt_version"]

# How the measured `salt` commands print their replies: Salt's default outputter (nested text, each minion
# printed as its reply arrives), `--out json` (one JSON document per minion, as they arrive) and
# `--out json --static` (one JSON document with every reply, printed only once the command is done).
SALT_OUTPUTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "json": ("--out", "json"),
    "static": ("--out", "json", "--static"),
}


def ensure_salt_venv(venv: Path, spec: str) -> None:
    """Create `venv` and pip-install `spec` into it, unless it already has a working `salt`."""
    if (venv / "bin" / "salt").exists():
        return
    print(f"creating a virtualenv with {spec} in {venv} (a few minutes; --salt-venv PATH reuses one) ...",
          file=sys.stderr, flush=True)
    _run_setup([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    _run_setup([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec],
               f"pip install {spec}")


def _run_setup(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"{what} failed (exit {done.returncode}): {tail[0]}")


def salt_version(venv: Path) -> str:
    """`salt --version` of the virtualenv, e.g. 'salt 3008.4 (Argon)'; BenchError if it has no usable salt."""
    salt = venv / "bin" / "salt"
    if not salt.exists():
        raise BenchError(f"{venv} has no bin/salt: not a Salt virtualenv")
    done = subprocess.run([str(salt), "--version"], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"{salt} --version failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return done.stdout.strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class SaltFleet:
    """A salt-master and one salt-minion per (id, grains) pair, all under `root`."""

    def __init__(self, venv: Path, root: Path, minions: list[tuple[str, dict[str, Any]]]) -> None:
        """Prepare (not start) the fleet; `minions` are (minion id, custom grains)."""
        self.venv = venv
        self.root = root
        self.ids = [mid for mid, _ in minions]
        self._grains = dict(minions)
        self.publish_port = _free_port()
        self.ret_port = _free_port()
        self.conf_dir = root / "master-conf"
        # Same master, same sockets; only the CLI's waiting differs. Used for readiness polls, never measured.
        self._poll_conf_dir = root / "poll-conf"
        self.master = Child("salt-master", [str(venv / "bin" / "salt-master"), "-c", str(self.conf_dir),
                                            "-l", "warning"], root / "out" / "master.out")
        self.minions = [Child(f"salt-minion {mid}", [str(venv / "bin" / "salt-minion"), "-c",
                                                     str(self._minion_conf_dir(n)), "-l", "warning"],
                              root / "out" / f"minion{n}.out")
                        for n, mid in enumerate(self.ids, start=1)]

    def _minion_conf_dir(self, n: int) -> Path:
        return self.root / f"minion{n}-conf"

    def _common(self, name: str) -> dict[str, Any]:
        """Paths that keep a daemon off /etc, /var and /srv; `user` so root-only checks are not needed.

        One root_dir per daemon: paths salt derives from it (e.g. the minion's extmods directory) would
        otherwise be shared, and minions starting together race to create them (EEXIST, exit 17).
        """
        base = self.root / "state" / name
        return {"root_dir": str(base), "pki_dir": str(base / "pki"), "cachedir": str(base / "cache"),
                "sock_dir": str(base / "run"), "pidfile": str(base / "run" / f"{name}.pid"),
                "log_file": str(base / "log" / name), "user": getpass.getuser()}

    def write(self) -> None:
        """Master and minion config files: salt defaults except paths, ports and the 127.0.0.1 interface."""
        master = {**self._common("master"), "interface": "127.0.0.1", "publish_port": self.publish_port,
                  "ret_port": self.ret_port, "auto_accept": True,
                  "file_roots": {"base": [str(self.root / "state" / "master" / "srv")]},
                  "pillar_roots": {"base": [str(self.root / "state" / "master" / "pillar")]}}
        _write_yaml(self.conf_dir / "master", master)
        _write_yaml(self._poll_conf_dir / "master", {**master, "timeout": 2, "gather_job_timeout": 2})
        for n, mid in enumerate(self.ids, start=1):
            _write_yaml(self._minion_conf_dir(n) / "minion", {
                **self._common(f"minion{n}"), "master": "127.0.0.1", "master_port": self.ret_port,
                "publish_port": self.publish_port, "id": mid, "grains": self._grains[mid]})

    def start(self, timeout: float = 300.0) -> None:
        """Start master and minions; return when every key is accepted and every minion answers test.ping."""
        self.master.start()
        wait_until("salt-master ports", lambda: _listening(self.ret_port) and _listening(self.publish_port),
                   60, alive=[self.master])
        for minion in self.minions:
            minion.start()
        wait_until(f"{len(self.ids)} accepted salt keys", lambda: len(self._accepted()) == len(self.ids), timeout,
                   alive=[self.master, *self.minions])
        wait_until(f"{len(self.ids)} salt-minions answering", lambda: self.poll_ping() == len(self.ids), timeout,
                   interval=1, alive=[self.master, *self.minions])

    def _accepted(self) -> list[str]:
        accepted = self.root / "state" / "master" / "pki" / "minions"
        return sorted(os.listdir(accepted)) if accepted.is_dir() else []

    def command(self, *args: str, output: str) -> list[str]:
        """A `salt` command line against this master with one of SALT_OUTPUTS' output options."""
        return [str(self.venv / "bin" / "salt"), "-c", str(self.conf_dir), *args, *SALT_OUTPUTS[output]]

    def poll_ping(self, target: str = "*") -> int:
        """How many minions answer test.ping, with short waits (readiness only)."""
        argv = [str(self.venv / "bin" / "salt"), "-c", str(self._poll_conf_dir), target, "test.ping",
                "--out", "json", "--static"]
        try:
            done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
            return sum(1 for v in json.loads(done.stdout or "{}").values() if v is True)
        except (subprocess.TimeoutExpired, json.JSONDecodeError, AttributeError):
            return 0

    def stop_minion(self, n: int) -> None:
        """Stop minion number n (1-based), its whole process group."""
        self.minions[n - 1].stop()

    def restart_minion(self, n: int, timeout: float = 120.0) -> None:
        """Start minion n again and return once it answers test.ping (its key is already accepted)."""
        minion = self.minions[n - 1]
        minion.start()
        time.sleep(1)
        wait_until(f"{self.ids[n - 1]} answering again", lambda: self.poll_ping(self.ids[n - 1]) == 1, timeout,
                   interval=1, alive=[self.master, minion])

    def stop(self) -> None:
        """Stop every minion, then the master (each process group; SIGKILL after 20 s)."""
        stop_all(self.minions)
        self.master.stop()


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
