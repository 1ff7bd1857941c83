"""A node daemon is SIGKILLed in the middle of a long action: `nmc rpc` names it and still reports the others.

Three `nmc serve node` daemons run `shell.run` of a command that takes a few
seconds; once all three have started it, one daemon is killed (SIGKILL: no
goodbye, no reply). The command must finish on its own by its --timeout,
report the two live nodes' results and name the dead one as not answering,
exit 2, and print no traceback. Authorization is off here (`authz.mode =
none`): the fault under test is the node's death, and one process fewer keeps
the test light; test_faults_policy covers the policy service.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nmc.ops.broker.server import Broker
from tests.integration.daemonkit import DaemonFleet, NmcCommand, until


@pytest.mark.timeout(120)
async def test_node_killed_mid_action_is_reported_as_no_response(nats_server: Broker, tmp_path: Path):
    daemons = DaemonFleet(tmp_path / "fleet", nats_server.url, 3,
                          node_cfg={"plugin.shell.enabled": "true", "authz.mode": "none"})
    run: NmcCommand | None = None
    try:
        nodes = await daemons.start_nodes()
        victim = daemons.identities[1]
        started = tmp_path / "started"
        run = NmcCommand(daemons.client_env(), "rpc", "shell", "run", f"command=echo x >> {started}; sleep 3",
                         "--timeout", "8", workdir=tmp_path)

        async def all_running() -> bool:
            return started.exists() and len(started.read_text().splitlines()) == 3

        await until(all_running, 60, "every node to start the command")
        nodes[victim].kill()
        code, out, err = await run.finish()
    finally:
        if run is not None:
            run.ensure_stopped()
        daemons.stop_all()

    assert "Traceback" not in err, err
    assert code == 2, out + err
    lines = out.splitlines()
    assert "  Nodes: 3 discovered, 2 replied, 2 ok, 0 failed" in lines
    at = lines.index("  No response from 1 node(s):")
    assert lines[at + 1] == f"    {victim}"
    for live in set(daemons.identities) - {victim}:
        assert live in lines  # each live node's block starts with its identity (OK: no status after it)
