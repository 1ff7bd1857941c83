"""The package agent end to end: a real .deb built here, real dpkg, two real nodes on a real nats-server.

Only the dedicated package `nmc-test-pkg` is ever installed or removed, and
it is purged at teardown whatever happened. No network: the agent's commands
are configured (plugin.package.*) to install the local .deb files.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nmc.protocol.ddl import summarize
from nmc.protocol.status import Status
from nmc.services.agents import Package

PKG = "nmc-test-pkg"
NODES = ("pkg1.test", "pkg2.test")

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dpkg-deb") is None,
                                reason="needs root and dpkg to install a test package")


def dpkg_state() -> str:
    """What dpkg itself says, independent of the agent: 'installed 1.0' or 'absent'."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", PKG], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0 or out.stdout.startswith("not-installed"):
        return "absent"
    return out.stdout.strip()


def purge() -> None:
    subprocess.run(["dpkg", "--purge", PKG], capture_output=True, check=True)


def build_deb(root: Path, version: str) -> Path:
    tree = root / f"tree-{version}"
    control = tree / "DEBIAN"
    control.mkdir(parents=True, mode=0o755)
    control.chmod(0o755)
    (control / "control").write_text(
        f"Package: {PKG}\nVersion: {version}\nArchitecture: all\nMaintainer: nmc tests <nmc@localhost>\n"
        "Section: misc\nPriority: optional\nDescription: nmc package agent test package\n"
        " Installed and removed by nmc's tests only.\n")
    share = tree / "usr" / "share" / PKG
    share.mkdir(parents=True)
    (share / "VERSION").write_text(f"{version}\n")
    deb = root / f"{PKG}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)
    return deb


@pytest.fixture
def debs(tmp_path: Path) -> Iterator[Path]:
    """A directory with nmc-test-pkg 1.0 and 1.1; the package is purged before and after the test."""
    root = tmp_path / "debs"
    root.mkdir()
    build_deb(root, "1.0")
    build_deb(root, "1.1")
    purge()
    try:
        yield root
    finally:
        purge()


def local_commands(debs: Path) -> dict[str, str]:
    """plugin.package.* for the local .debs: install picks the asked version, update installs 1.1."""
    where = shlex.quote(str(debs))
    return {"install_command": f"dpkg -i {where}/{{package}}_{{version}}_all.deb",
            "update_command": f"dpkg -i {where}/{{package}}_1.1_all.deb",
            "uninstall_command": "dpkg -r {package}"}


async def start_nodes(fleet, debs: Path) -> None:
    for identity in NODES:
        await fleet.add(identity, {"role": "pkg"}, agent_settings={"package": local_commands(debs)})


async def status_everywhere(fc) -> dict[str, tuple[str, str, str]]:
    result = await fc.call("package", "status", {"package": PKG}, expect=NODES)
    assert not result.no_response and all(r.ok for r in result.results), result.results
    summary = {s.output: s.value for s in summarize(Package.spec().actions["status"], [r.data for r in result.results])}
    states = {r.identity: (r.data["status"], r.data["version"], r.data["arch"]) for r in result.results}
    assert summary["status"] == {next(iter(states.values()))[0]: 2}
    return states


async def on(fc, identity: str, action: str, data: dict):
    result = await fc.call("package", action, data, filter_expr=f"identity({identity})", expect=[identity],
                           timeout=60)
    assert [r.identity for r in result.results] == [identity]
    return result.results[0]


async def test_install_update_uninstall_on_two_nodes(fleet, debs):
    await start_nodes(fleet, debs)
    async with fleet.client() as fc:
        assert await status_everywhere(fc) == {n: ("absent", "", "") for n in NODES}

        installed = await on(fc, "pkg1.test", "install", {"package": PKG, "version": "1.0"})
        assert installed.status == Status.OK, installed.message
        assert (installed.data["status"], installed.data["version"], installed.data["exitcode"]) == ("installed", "1.0", 0)
        assert f"Setting up {PKG} (1.0)" in installed.data["output"]
        assert dpkg_state() == "installed 1.0"
        assert await status_everywhere(fc) == {n: ("installed", "1.0", "all") for n in NODES}

        # The other node sees the same host and upgrades it.
        updated = await on(fc, "pkg2.test", "update", {"package": PKG})
        assert updated.status == Status.OK, updated.message
        assert (updated.data["status"], updated.data["version"]) == ("installed", "1.1")
        assert "Unpacking nmc-test-pkg (1.1) over (1.0)" in updated.data["output"]
        assert dpkg_state() == "installed 1.1"
        assert await status_everywhere(fc) == {n: ("installed", "1.1", "all") for n in NODES}

        removed = await on(fc, "pkg1.test", "uninstall", {"package": PKG})
        assert removed.status == Status.OK, removed.message
        assert (removed.data["status"], removed.data["version"], removed.data["exitcode"]) == ("absent", "", 0)
        assert dpkg_state() == "absent"
        assert await status_everywhere(fc) == {n: ("absent", "", "") for n in NODES}

        # Removing what is not installed is not an error for dpkg -r: the second node agrees it is gone.
        again = await on(fc, "pkg2.test", "uninstall", {"package": PKG})
        assert (again.status, again.data["status"]) == (Status.OK, "absent")


async def test_failed_install_reports_the_package_managers_error(fleet, debs):
    await start_nodes(fleet, debs)
    async with fleet.client() as fc:
        failed = await on(fc, "pkg1.test", "install", {"package": PKG, "version": "9.9"})
    assert failed.status == Status.ABORTED
    assert failed.message.startswith("dpkg: error") and f"{PKG}_9.9_all.deb" in failed.message
    assert failed.data["status"] == "absent" and failed.data["exitcode"] != 0
    assert failed.message in failed.data["output"]
    assert dpkg_state() == "absent"


async def test_odd_names_never_reach_the_package_manager(fleet, debs, tmp_path):
    marker = tmp_path / "ran"
    await start_nodes(fleet, debs)
    async with fleet.client() as fc:
        bad_name = await on(fc, "pkg1.test", "install", {"package": f"x;touch {marker}"})
        option = await on(fc, "pkg1.test", "uninstall", {"package": "--force-all"})
        bad_version = await on(fc, "pkg1.test", "install", {"package": PKG, "version": "1.0 --force-all"})
        missing = await on(fc, "pkg1.test", "status", {})
    assert [r.status for r in (bad_name, option, bad_version)] == [Status.INVALID_DATA] * 3
    assert missing.status == Status.MISSING_DATA
    assert not marker.exists() and dpkg_state() == "absent"


async def test_an_install_command_needing_a_version_says_so(fleet, debs):
    await start_nodes(fleet, debs)
    async with fleet.client() as fc:
        result = await on(fc, "pkg1.test", "install", {"package": PKG})
    assert result.status == Status.ABORTED
    assert "plugin.package.install_command" in result.message and "no version was given" in result.message
