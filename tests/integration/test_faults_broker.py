"""The broker restarts in the middle of `nmc rpc --batch`: the run names the nodes it lost and finishes.

Real processes throughout: a nats-server with JetStream, five `nmc serve node`
daemons (shell agent enabled), the `nmc serve policy` service, and the `nmc`
command itself. The broker goes away while the second batch's commands run
and stays away until that batch's gathering has ended (the client's --debug
line `batch_finished`), so the replies of that batch are lost for certain.
The client is then frozen (SIGSTOP) while the broker comes back and every
daemon reconnects on its own, and thawed (SIGCONT): its connection
reconnects too, and the third batch runs on it. Freezing the client orders
"daemons back" before "client back" without guessing how long either takes.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from nmc.ops.broker.server import Broker
from tests.integration.daemonkit import DaemonFleet, NmcCommand, nmc, until

NODES, BATCH = 5, 2


@pytest.fixture
async def daemons(nats_server: Broker, tmp_path: Path):
    fleet = DaemonFleet(tmp_path / "fleet", nats_server.url, NODES, node_cfg={"plugin.shell.enabled": "true"})
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("output", ["json", "text"])
async def test_broker_restart_during_batched_rpc_names_lost_nodes_and_the_fleet_comes_back(
        daemons: DaemonFleet, nats_server: Broker, tmp_path: Path, output: str):
    policy = daemons.policy().start()
    await policy.wait_for("policy_service_started")
    nodes = await daemons.start_nodes()
    first, second, third = (daemons.identities[i:i + BATCH] for i in range(0, NODES, BATCH))
    started = tmp_path / "started"  # each node appends a line when its command starts
    args = ["--debug", "rpc", "shell", "run", f"command=echo x >> {started}; sleep 2", "--batch", str(BATCH),
            "--timeout", "8"]
    run = NmcCommand(daemons.client_env(), *args, *(["--json"] if output == "json" else []), workdir=tmp_path)
    try:
        async def second_batch_running() -> bool:
            return started.exists() and len(started.read_text().splitlines()) >= 2 * BATCH

        await until(second_batch_running, 60, "the second batch to start")
        nats_server.stop()
        await run.wait_stderr("batch_finished", count=2)  # batch 2 gave up waiting: its replies are lost
        run.proc.send_signal(signal.SIGSTOP)
        nats_server.start()
        for daemon in [*nodes.values(), policy]:
            await daemon.wait_for("nats_reconnected")
        run.proc.send_signal(signal.SIGCONT)
        code, out, err = await run.finish()
    finally:
        run.ensure_stopped()

    assert "Traceback" not in err, err
    assert code == 2, out + err  # 2: some nodes did not answer
    if output == "json":
        result = json.loads(out)
        assert result["no_response"] == second
        assert sorted(r["sender"] for r in result["replies"]) == first + third
        assert all(r["statuscode"] == 0 for r in result["replies"])
        assert result["summary"]["discovered"] == NODES and result["summary"]["no_response"] == BATCH
    else:
        lines = out.splitlines()
        at = lines.index(f"  No response from {BATCH} node(s):")
        assert lines[at + 1:at + 1 + BATCH] == [f"    {name}" for name in second]
        assert f"  Nodes: {NODES} discovered, {NODES - BATCH} replied, {NODES - BATCH} ok, 0 failed" in lines
    # Batches 1 and 3 ran; the second batch's commands ran too (only their answers were lost).
    assert len(started.read_text().splitlines()) == NODES

    # Every node is back on its own: a plain `nmc ping` finds all of them.
    async def all_answer() -> bool:
        code, out, _ = await nmc(daemons.client_env(), "ping", "--json", workdir=tmp_path)
        return code == 0 and sorted(r["sender"] for r in json.loads(out)["replies"]) == daemons.identities

    await until(all_answer, 30, "nmc ping to find every node")
