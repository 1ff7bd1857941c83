"""`nmc puppet` and `nmc rpc puppet` on nodes without Puppet, as a real process against real nodes.

The nodes' configured puppet command names a program that does not exist, exactly what a node
sees when Puppet is not installed, so these tests run (and mean the same) with or without
Puppet on the machine. They check what an operator reads: the short reason once per node with
the install hint, failed replies without empty fields, summaries that say there was nothing to
sum up, and runall's event times never later than its total.
"""

from __future__ import annotations

import re
import shlex

import pytest

from tests.integration.puppetkit import PuppetSite, client_env_for, run_nmc

MISSING = "nmc-test-no-such-puppet"
HINT = "install Puppet (Debian, Ubuntu: apt-get install puppet) or set plugin.puppet.command"
NOT_FOUND = f"`{MISSING}` command not found on this node: {HINT}"
STAMP = re.compile(r"^\[\s*(\d+\.\d)s\] ")


@pytest.fixture
async def no_puppet(fleet, tmp_path) -> list[str]:
    """Three nodes with the puppet agent whose `puppet apply ...` command is not installed."""
    site = PuppetSite(tmp_path / "puppet", fleet)
    names = ["p1.test", "p2.test", "p3.test"]
    for name in names:
        node = site.make(name)
        settings = node.settings()
        settings["command"] = shlex.join([MISSING, "apply", *node.dir_args(), str(node.manifest)])
        await fleet.add(name, {"role": "web"}, agent_settings={"puppet": settings})
    return names


@pytest.fixture
def client_env(nats_server, test_ca, tmp_path) -> dict:
    """Environment for `nmc` with a client.cfg for the fleet's broker and CA."""
    test_ca.signer("admin")
    return client_env_for(nats_server.url, test_ca.directory, tmp_path, clean=True)


nmc = run_nmc


async def test_runall_says_puppet_is_missing_once_per_node_with_the_hint(no_puppet, client_env):
    rc, out, err = await nmc(client_env, "puppet", "runall", "2")
    assert rc == 1, out + err
    lines = out.splitlines()
    events = [STAMP.sub("", line) for line in lines if STAMP.match(line)]
    assert events == [f"{name}: {NOT_FOUND} (0 applying)" for name in no_puppet]
    assert out.count("command not found") == 3  # once per node: the summary names them, nothing more
    assert MISSING + " apply" not in out  # not the whole command line
    assert lines[-4:-1] == ["  Nodes: 3 targeted, 0 ok, 0 failed, 3 not started, 0 timed out, 0 no response",
                            "  Most applying at once: 0 (limit 2)",
                            "  Not started: p1.test, p2.test, p3.test"]
    # The total is on the clock of the event stamps: never earlier than the last event.
    total = re.fullmatch(r"Finished 3 Puppet run\(s\) in (\d+\.\d) s", lines[-1])
    assert total, lines[-1]
    last_event = max(float(STAMP.match(line).group(1)) for line in lines if STAMP.match(line))
    assert last_event <= float(total.group(1)), out


async def test_runonce_says_puppet_is_missing(no_puppet, client_env):
    rc, out, _ = await nmc(client_env, "puppet", "runonce", "-I", "p2.test")
    assert rc == 1
    assert out.splitlines()[0] == f"   p2.test: Unknown Error: {NOT_FOUND}"


async def test_failed_replies_show_their_message_without_empty_fields(no_puppet, client_env):
    rc, out, _ = await nmc(client_env, "rpc", "puppet", "last_run_summary")
    assert rc == 1
    lines = out.splitlines()
    # Each failed node: its status and message, then straight on to the next (no `Since Last Run: ` etc.).
    for name in no_puppet:
        block = lines.index(next(ln for ln in lines if ln.startswith(f"{name}  ")))
        assert re.fullmatch(rf"{re.escape(name)}  Aborted: Puppet has not run yet: no \S+last_run_summary\.yaml",
                            lines[block])
        assert lines[block + 1] == ""
    # Summaries over no successful reply say so in one line each.
    assert "Average of Total Time: no successful replies" in lines
    assert "Sum of Failed Resources: no successful replies" in lines
    assert "Summary of Config Version: no successful replies" in lines
    assert "(no values)" not in out and "(no numeric values)" not in out

    # runonce's failure leaves every output at its default (summary "", pid none, lastrun 0, ...):
    # only the message is shown. (Data a failure does carry is shown: see test_cli_rpc_plugins, `Healthy`.)
    rc, out, _ = await nmc(client_env, "rpc", "puppet", "runonce", "-I", "p1.test")
    assert rc == 1
    assert out.split("\n\n")[0] == f"p1.test  Unknown Error: {NOT_FOUND}"
