"""What both console test files start: a secure fleet whose first node has a hostile fact, and the console on it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import yaml

from nmc.ops.console.service import ConsoleService
from tests.adversarial.kit import HostileFleet


@contextlib.asynccontextmanager
async def hostile_fact_fleet(root: Path, nodes: int, motd: str) -> AsyncIterator[HostileFleet]:
    """A running HostileFleet of `nodes` nodes; the first one's `motd` fact is `motd` (facts are attacker-controlled).

    The nodes enable the shell agent: `sleep` makes a job that is still running while a page watches it.
    """
    fleet = HostileFleet(root, node_cfg={"plugin.shell.enabled": "true"}, node_count=nodes)
    victim = fleet.layout.node_dir(fleet.identities[0]) / "facts.yaml"
    facts = yaml.safe_load(victim.read_text())
    victim.write_text(yaml.safe_dump({**facts, "motd": motd}))
    try:
        yield await fleet.start()
    finally:
        await fleet.stop()


@contextlib.asynccontextmanager
async def running_console(fleet: HostileFleet, columns: Sequence[str]) -> AsyncIterator[ConsoleService]:
    """The console in this process on 127.0.0.1 (a free port), with the fleet's `nmc-console` certificate."""
    service = ConsoleService(fleet.client_config("nmc-console"), bind="127.0.0.1", port=0, columns=tuple(columns))
    await service.start(give_up_after=10)
    try:
        yield service
    finally:
        await service.stop()
