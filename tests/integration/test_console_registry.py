"""The console's cached registry read against a real fleet: a node that starts later appears within the period.

A real secure fleet (tests/adversarial/kit.py) of which one node is held back, the
console in-process with a 1 s registry max age, then that node started: the Fleet page
and /api/fleet must show it soon after (nmc.ops.console.snapshot: within max_age and one
read), and the page says how old its read is.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nmc.ops.config.files import load_config
from nmc.ops.console.service import ConsoleService
from nmc.ops.daemon.serve import build_node
from tests.adversarial.kit import HostileFleet, until

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
MAX_AGE = 1.0


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[HostileFleet]:
    """Three nodes' certificates and configs; only the first two started (the last one's config is `late_cfg`)."""
    fleet = HostileFleet(tmp_path / "fleet", node_count=3)
    late = fleet.server_cfgs.pop()
    try:
        await fleet.start()
        fleet.server_cfgs.append(late)
        yield fleet
    finally:
        await fleet.stop()


@pytest.fixture
async def console(fleet: HostileFleet) -> AsyncIterator[ConsoleService]:
    service = ConsoleService(fleet.client_config("nmc-console"), bind="127.0.0.1", port=0, registry_max_age=MAX_AGE)
    await service.start(give_up_after=10)
    try:
        yield service
    finally:
        await service.stop()


async def fleet_api(console: ConsoleService) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{console.bound_port}/api/fleet",
                     headers={"Authorization": f"Bearer {console.token}"}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def identities(console: ConsoleService) -> set[str]:
    return {n["identity"] for n in (await fleet_api(console))["nodes"]}


async def test_a_node_started_after_the_console_appears_within_the_refresh_period(
        fleet: HostileFleet, console: ConsoleService) -> None:
    first_two = set(fleet.identities[:2])

    async def early_nodes() -> bool:
        return await identities(console) >= first_two

    await until(early_nodes, 20, "the running nodes on the Fleet page")
    late = fleet.identities[2]
    assert late not in await identities(console)
    assert console.data is not None and console.data._registry is not None
    reads_before = console.data._registry.reads

    node = await build_node(load_config(fleet.server_cfgs[-1], kind="server", env={}))
    await node.start()
    fleet.nodes.append(node)
    started = time.monotonic()

    async def late_node() -> bool:
        return late in await identities(console)

    # Registered at start; then at most max_age until a page starts a read, the read itself, and the next page.
    await until(late_node, 10, f"{late} on the Fleet page")
    assert time.monotonic() - started < 10
    assert console.data._registry.reads > reads_before

    result = await fleet_api(console)
    assert result["total"] == 3
    assert 0 <= result["read_age"] <= 30 and result["read_seconds"] >= 0
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{console.bound_port}/",
                     headers={"Authorization": f"Bearer {console.token}"}) as r:
        assert "registry read" in await r.text()
