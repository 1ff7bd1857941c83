"""`nmc puppet ...` as a real process against nodes running real `puppet apply`: what an operator sees."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests.integration.puppetkit import client_env_for, max_overlap, run_nmc
from tests.tools import needs_tool

_puppet = needs_tool("puppet")  # skipped with one line without puppet, failed in CI (tests/tools.py)


@pytest.fixture
def client_env(nats_server, test_ca, tmp_path) -> dict:
    """Environment for `nmc` with a client.cfg for the fleet's broker and CA."""
    test_ca.signer("admin")
    return client_env_for(nats_server.url, test_ca.directory, tmp_path)


nmc = run_nmc


async def test_runonce_batch_3_runs_every_us_node_never_more_than_3_at_once(fleet, puppet_site, client_env):
    for i in range(1, 6):
        await puppet_site.add(f"us{i}.test", {"country": "us"})
    await puppet_site.add("de1.test", {"country": "de"})
    rc, out, err = await nmc(client_env, "puppet", "runonce", "-W", "country=us", "--batch", "3")
    assert rc == 0, out + err
    windows = {name: node.windows() for name, node in puppet_site.nodes.items()}
    assert {name: len(ws) for name, ws in windows.items()} == {**{f"us{i}.test": 1 for i in range(1, 6)},
                                                               "de1.test": 0}
    assert max_overlap([w for ws in windows.values() for w in ws]) <= 3
    # The second batch started only after every run of the first had ended.
    first, second = ["us1.test", "us2.test", "us3.test"], ["us4.test", "us5.test"]
    assert min(windows[n][0][0] for n in second) > max(windows[n][0][1] for n in first)
    lines = out.splitlines()
    assert lines[0] == "Running Puppet on 5 node(s), 3 at a time"
    assert "--- batch 1 / 2 finished" in lines and "--- batch 2 / 2 finished" in lines
    assert sum(": started a Puppet run (" in line for line in lines) == 5
    assert "  Nodes: 5 targeted, 5 ok, 0 failed, 0 not started, 0 timed out, 0 no response" in lines
    assert re.fullmatch(r"Finished 5 Puppet run\(s\) in \d+\.\d s", lines[-1])


async def test_runall_reports_each_node_and_status_shows_the_fleet(fleet, puppet_site, client_env):
    quick = await puppet_site.add("r1.test", {"role": "web"})
    slow = await puppet_site.add("r2.test", {"role": "web"}, sleep=60)
    await puppet_site.add("r3.test", {"role": "web"})
    rc, out, err = await nmc(client_env, "puppet", "disable", "-I", "r3.test", "--message", "maint")
    assert rc == 0, out + err
    assert "   r3.test: Disabled Puppet: 'maint'" in out.splitlines()

    begun = time.monotonic()
    rc, out, err = await nmc(client_env, "puppet", "runall", "2", "-F", "role=web", "--run-timeout", "8",
                             "--poll-interval", "0.2")
    assert rc == 1, out + err  # a timed-out and a refused node are failures, not silence
    assert time.monotonic() - begun < 30, "a stuck run is given up at --run-timeout, not waited for"
    lines = out.splitlines()
    assert lines[0] == "Running Puppet on 3 node(s), at most 2 at once"
    events = [re.sub(r"^\[\s*\d+\.\d+s\] ", "", line) for line in lines if line.startswith("[")]
    assert events[:2] == ["r1.test: started a Puppet run (1 applying)", "r2.test: started a Puppet run (2 applying)"]
    assert re.fullmatch(r"r1\.test: finished: 1 resource\(s\) changed \(1 applying\)", events[2])
    assert events[3:] == ["r3.test: Puppet is disabled: 'maint' (1 applying)",
                          "r2.test: still applying after 8 s (0 applying)"]
    assert "  Nodes: 3 targeted, 1 ok, 0 failed, 1 not started, 1 timed out, 0 no response" in lines
    assert "  Most applying at once: 2 (limit 2)" in lines
    assert len(quick.windows()) == 1 and quick.lastrun() > 0

    # r2's run is still going: status shows it, with r3's reason and r1's last run.
    rc, out, err = await nmc(client_env, "puppet", "status")
    assert rc == 0, out + err
    lines = out.splitlines()
    assert "   r2.test: Currently applying a catalog; never completed a run" in lines
    assert "   r3.test: Currently disabled: 'maint'; never completed a run" in lines
    assert any(re.fullmatch(r"   r1\.test: Currently stopped; last completed run \d+ seconds? ago", line)
               for line in lines)
    assert "Nodes applying: 1 (r2.test)" in lines
    assert "Enabled: 2, Disabled: 1 (r3.test: 'maint')" in lines
    assert any(re.fullmatch(r"Last run ages: newest \d+ seconds?, oldest \d+ seconds?, never run: 2", line)
               for line in lines)
    assert "Summary of Status:" in lines
    report = json.loads((await nmc(client_env, "puppet", "status", "--json"))[1])["puppet"]
    assert report["applying"] == ["r2.test"] and report["disabled"] == {"r3.test": "maint"}
    assert slow.run_pid() is not None

    # A run in progress refuses another; the CLI exits 1 and says why.
    rc, out, _ = await nmc(client_env, "puppet", "runonce", "-I", "r2.test")
    assert rc == 1
    assert "r2.test: Aborted: Puppet is currently applying a catalog, cannot run now" in out


@pytest.mark.parametrize(("args", "error"), [
    (["runonce", "--batch", "3", "--splay"], "Error: --batch waits for each batch's runs, so it cannot be combined with --splay"),
    (["runonce", "--batch", "x"], "Error: --batch takes N or N% (1-100%), got 'x'"),
    (["runonce", "--tags", "a;b"], "Error: --tags takes comma-separated Puppet tags, got 'a;b'"),
    (["runall", "0"], "Error: Invalid value for 'N': 0 is not in the range x>=1."),
])
async def test_usage_errors_exit_4_before_anything_is_sent(tmp_path, args, error):
    env = {**os.environ, "NMC_CONFIG": str(tmp_path / "missing.cfg"), "HOME": str(tmp_path)}
    rc, _, err = await nmc(env, "puppet", *args)
    assert (rc, err.strip().splitlines()) == (4, [f"{error} (see `nmc puppet {args[0]} --help`)"])
