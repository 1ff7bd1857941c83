"""The puppet agent and `runall` against real `puppet apply` runs on real nodes.

How many nodes applied at once is read from the windows Puppet's own runs
wrote (see puppetkit), never from nmc's bookkeeping.
"""

from __future__ import annotations

import asyncio
import time

from nmc.client.runall import runall
from nmc.protocol.status import Status
from tests.integration.puppetkit import max_overlap, wait_until
from tests.tools import needs_tool

_puppet = needs_tool("puppet")  # skipped with one line without puppet, failed in CI (tests/tools.py)


async def call(fc, action, node, data=None):
    """One puppet action on one node; its reply."""
    result = await fc.call("puppet", action, data or {}, expect=[node], direct=True)
    assert result.results, f"{node} did not answer puppet {action}"
    return result.results[0]


async def idle(fc, node):
    reply = await call(fc, "status", node)
    return reply.data if not reply.data["applying"] else None


async def test_runall_2_never_has_more_than_two_puppet_runs_at_once(fleet, puppet_site):
    nodes = [await puppet_site.add(f"p{i}.test") for i in range(1, 7)]
    async with fleet.client() as fc:
        # p6 is already applying a run nmc's runall did not start: it must count against the 2.
        assert (await call(fc, "runonce", "p6.test")).ok
        begun = time.time()
        events = []
        result = await runall(fc, concurrency=2, identities=[n.identity for n in nodes] + ["ghost.test"],
                              poll_interval=0.2, run_timeout=60, on_event=events.append)
    windows = {n.identity: n.windows() for n in nodes}
    assert max_overlap([w for ws in windows.values() for w in ws]) <= 2, windows
    # Every node ran once inside runall (p6 twice: its own run, then runall's), and has a new last run.
    assert {name: len(ws) for name, ws in windows.items()} == {**{f"p{i}.test": 1 for i in range(1, 6)}, "p6.test": 2}
    assert all(ws[-1][0] > begun for ws in windows.values())
    assert all(n.lastrun() >= int(begun) for n in nodes)
    assert [(o.identity, o.outcome) for o in result.outcomes] == [
        ("ghost.test", "no_response"), *((f"p{i}.test", "ok") for i in range(1, 7))]
    assert all(o.changed_resources == 1 and o.lastrun == puppet_site.nodes[o.identity].lastrun()
               for o in result.outcomes if o.outcome == "ok")
    assert result.peak_applying == 2
    assert ("busy", "p6.test") in [(e.kind, e.identity) for e in events]
    assert max(e.applying for e in events) <= 2


async def test_status_reports_a_run_in_progress_then_its_summary(fleet, puppet_site):
    node = await puppet_site.add("s1.test")
    async with fleet.client() as fc:
        before = await call(fc, "status", "s1.test")
        assert before.data.items() >= {"applying": False, "enabled": True, "status": "stopped", "lastrun": 0,
                                       "message": "Currently stopped; never completed a run"}.items()
        started = await call(fc, "runonce", "s1.test")
        assert started.ok and started.data["summary"].startswith("Started a Puppet run using the 'puppet apply ")
        during = await call(fc, "status", "s1.test")
        assert during.data["applying"] is True and during.data["status"] == "applying a catalog"
        assert during.data["pid"] == started.data["pid"] == node.run_pid()
        again = await call(fc, "runonce", "s1.test")
        assert (again.status, again.message) == (Status.ABORTED, "Puppet is currently applying a catalog, cannot run now")
        after = await wait_until(lambda: idle(fc, "s1.test"), 30, "the run to end")
        assert after["lastrun"] == node.lastrun() >= started.data["initiated_at"]
        assert after["status"] == "stopped" and after["changed_resources"] == 1 and after["failed_resources"] == 0
        assert after["message"].startswith("Currently stopped; last completed run ")
        await wait_until(lambda: node.run_pid() is None, 5, "the run lock to be given up when the run ended")
        summary = await call(fc, "last_run_summary", "s1.test")
        assert summary.data["resources"]["changed"] == 1 and summary.data["time"]["last_run"] == after["lastrun"]
        assert summary.data["changed_resources"] == 1 and summary.data["total_resources"] >= 1
        assert summary.data["puppet_version"].startswith("7.") and summary.data["config_version"]

        # --noop: Puppet runs (a new last run) but the exec does not.
        assert (await call(fc, "runonce", "s1.test", {"noop": True, "force": True})).ok
        noop = await wait_until(lambda: idle(fc, "s1.test"), 30, "the noop run to end")
        assert len(node.windows()) == 1 and noop["changed_resources"] == 0

        # A lock left by a dead process is stale: not applying.
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
        (node.statedir / "agent_catalog_run.lock").write_text(str(proc.pid))
        stale = await call(fc, "status", "s1.test")
        assert stale.data["applying"] is False and stale.data["pid"] is None


async def test_disable_refuses_runs_and_speaks_puppets_lock_format(fleet, puppet_site):
    node = await puppet_site.add("d1.test")
    other = await puppet_site.add("d2.test")
    lock = node.statedir / "agent_disabled.lock"
    async with fleet.client() as fc:
        off = await call(fc, "disable", "d1.test", {"message": "db migration, ask ops ✓"})
        assert off.ok and off.data["enabled"] is False and off.data["status"] == "disabled"
        refused = await call(fc, "runonce", "d1.test", {"force": True})
        assert (refused.status, refused.message) == (Status.ABORTED, "Puppet is disabled: 'db migration, ask ops ✓'")
        status = await call(fc, "status", "d1.test")
        assert status.data["message"] == "Currently disabled: 'db migration, ask ops ✓'; never completed a run"
        assert not node.starts.exists() and not node.summary.exists() and node.run_pid() is None

        # Byte for byte what `puppet agent --disable` writes, and real puppet agent honours it.
        puppet = await asyncio.create_subprocess_exec(
            "puppet", "agent", "--disable", "db migration, ask ops ✓", *other.dir_args(),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        assert await puppet.wait() == 0
        assert lock.read_bytes() == (other.statedir / "agent_disabled.lock").read_bytes()
        assert lock.read_bytes() == '{"disabled_message":"db migration, ask ops ✓"}'.encode()
        agent = await asyncio.create_subprocess_exec(
            "puppet", "agent", "--onetime", "--no-daemonize", "--verbose", *node.dir_args(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await agent.communicate()
        assert "administratively disabled (Reason: 'db migration, ask ops ✓')" in out.decode()

        twice = await call(fc, "disable", "d1.test")
        assert (twice.status, twice.message) == (Status.ABORTED,
                                                 "Could not disable Puppet: Already disabled: 'db migration, ask ops ✓'")
        # nmc reads and removes a lock written by puppet itself.
        theirs = await call(fc, "status", "d2.test")
        assert theirs.data["enabled"] is False and theirs.data["disable_message"] == "db migration, ask ops ✓"
        assert (await call(fc, "enable", "d2.test")).ok
        assert not (other.statedir / "agent_disabled.lock").exists()

        on = await call(fc, "enable", "d1.test")
        assert on.ok and on.data["enabled"] is True and not lock.exists()
        again = await call(fc, "enable", "d1.test")
        assert (again.status, again.message) == (Status.ABORTED, "Could not enable Puppet: Already enabled")
        default = await call(fc, "disable", "d1.test")
        assert default.data["disable_message"] == "Disabled via nmc by cert=alice"


async def test_splay_schedules_the_run_in_the_background(fleet, puppet_site):
    node = await puppet_site.add("sp1.test", sleep=0.2)
    async with fleet.client() as fc:
        asked = time.time()
        scheduled = await call(fc, "runonce", "sp1.test", {"splay": True, "splaylimit": 2})
        assert scheduled.ok and scheduled.data["pid"] is None and 0 <= scheduled.data["splay"] <= 2
        assert scheduled.data["summary"].endswith(f"after a splay of {scheduled.data['splay']:.0f} s")
        assert time.time() - asked < 1, "the request does not wait for the splay"
        again = await call(fc, "runonce", "sp1.test", {"force": True})
        assert again.status == Status.ABORTED and again.message.startswith("A Puppet run is already scheduled")
        done = await wait_until(lambda: node.lastrun() and idle(fc, "sp1.test"), 30, "the splayed run to end")
        assert len(node.windows()) == 1 and node.windows()[0][0] >= asked + scheduled.data["splay"] - 0.01
        assert done["lastrun"] == node.lastrun()
        # force: no splay, whatever splay says.
        forced = await call(fc, "runonce", "sp1.test", {"splay": True, "force": True})
        assert forced.ok and forced.data["splay"] == 0 and forced.data["pid"] is not None
        await wait_until(lambda: idle(fc, "sp1.test"), 30, "the forced run to end")
