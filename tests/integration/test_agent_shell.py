"""The shell agent end to end: enabled only where the node's configuration says so."""

from __future__ import annotations

from pathlib import Path

from nmc.protocol.status import Status
from nmc.services.agents.shell import DISABLED_MESSAGE
from tests.proctools import gone


async def run(fc, identity: str, **data):
    result = await fc.call("shell", "run", data, filter_expr=f"identity({identity})", expect=[identity], timeout=20)
    assert [r.identity for r in result.results] == [identity]
    return result.results[0]


async def test_enabled_node_runs_and_reports_a_failing_command(fleet):
    await fleet.add("sh.test", {}, agent_settings={"shell": {"enabled": "true"}})
    async with fleet.client() as fc:
        failed = await run(fc, "sh.test", command="echo hi; echo err >&2; exit 3")
        ok = await run(fc, "sh.test", command="echo fine")
    assert failed.status == Status.ABORTED and failed.message == "command exited with code 3"
    assert (failed.data["stdout"], failed.data["stderr"], failed.data["exitcode"]) == ("hi\n", "err\n", 3)
    assert failed.data["timed_out"] is False and failed.data["duration"] >= 0
    assert ok.status == Status.OK and ok.data["stdout"] == "fine\n" and ok.data["exitcode"] == 0


async def test_timeout_kills_the_command_and_everything_it_started(fleet):
    await fleet.add("sh.test", {}, agent_settings={"shell": {"enabled": "yes"}})
    async with fleet.client() as fc:
        killed = await run(fc, "sh.test", command="sleep 10 & echo $!; wait", timeout=0.5)
    assert killed.status == Status.ABORTED and "timed out after 0.5s" in killed.message
    assert killed.data["timed_out"] is True and killed.data["exitcode"] < 0
    assert killed.data["duration"] < 5
    assert await gone(int(killed.data["stdout"]))


async def test_output_cap_and_cwd(fleet, tmp_path: Path):
    await fleet.add("sh.test", {}, agent_settings={"shell": {"enabled": "on", "max_output": "1000"}})
    async with fleet.client() as fc:
        big = await run(fc, "sh.test", command="head -c 5000 /dev/zero | tr '\\0' a; echo small >&2")
        here = await run(fc, "sh.test", command="pwd", cwd=str(tmp_path))
        nowhere = await run(fc, "sh.test", command="pwd", cwd=str(tmp_path / "missing"))
    assert big.status == Status.OK
    assert big.data["stdout"] == "a" * 1000 and big.data["stdout_truncated"] is True
    assert big.data["stderr"] == "small\n" and big.data["stderr_truncated"] is False
    assert here.data["stdout"] == f"{tmp_path}\n"
    assert nowhere.status == Status.ABORTED and "missing" in nowhere.message


async def test_disabled_nodes_refuse_and_run_nothing(fleet, tmp_path: Path):
    marker = tmp_path / "ran"
    await fleet.add("default.test", {})  # no plugin.shell settings at all
    await fleet.add("off.test", {}, agent_settings={"shell": {"enabled": "false"}})
    await fleet.add("typo.test", {}, agent_settings={"shell": {"enabled": "ture"}})
    async with fleet.client() as fc:
        result = await fc.call("shell", "run", {"command": f"touch {marker}"},
                               expect=["default.test", "off.test", "typo.test"], timeout=20)
    by_node = {r.identity: r for r in result.results}
    assert sorted(by_node) == ["default.test", "off.test", "typo.test"]
    assert all(r.status == Status.ABORTED for r in result.results)
    assert by_node["default.test"].message == by_node["off.test"].message == DISABLED_MESSAGE
    assert "'ture' is not true or false" in by_node["typo.test"].message
    assert not marker.exists()
