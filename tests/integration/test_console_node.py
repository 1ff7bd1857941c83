"""The console's Node page against a real secure fleet: the node's recent jobs and events, its agents' DDLs, nested facts.

A real nats-server with nmc's generated permissions, real nodes, policy and audit services
(tests/adversarial/kit.py), the console in-process with its own `console` certificate, and
a real HTTP client. The first node's facts carry a hostile value and a nested structure.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from nmc.client.run import JobOptions, run_action
from nmc.ops.console.service import ConsoleService
from tests.adversarial.kit import HostileFleet, until
from tests.integration.consolekit import hostile_fact_fleet, running_console

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
HOSTILE = "<script>alert(1)</script>"
NESTED = {"release": {"major": "12", "note": "<img src=x onerror=alert(2)>"}}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[HostileFleet]:
    async with hostile_fact_fleet(tmp_path / "fleet", 3, HOSTILE) as fleet:
        yield fleet


def _nest(fleet: HostileFleet) -> None:
    victim = fleet.layout.node_dir(fleet.identities[0]) / "facts.yaml"
    victim.write_text(yaml.safe_dump({**yaml.safe_load(victim.read_text()), "osinfo": NESTED}))


@pytest.fixture
async def nested_fleet(tmp_path: Path) -> AsyncIterator[HostileFleet]:
    fleet = HostileFleet(tmp_path / "fleet", node_count=3)
    _nest(fleet)
    try:
        yield await fleet.start()
    finally:
        await fleet.stop()


async def _get(console: ConsoleService, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{console.bound_port}{path}",
                            headers={"Authorization": f"Bearer {console.token}"}) as r:
            return r.status, await r.text()


async def _api(console: ConsoleService, path: str) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{console.bound_port}{path}",
                            headers={"Authorization": f"Bearer {console.token}"}) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def test_the_node_page_lists_the_nodes_recent_jobs_events_and_agent_actions(nested_fleet: HostileFleet) -> None:
    fleet, me = nested_fleet, nested_fleet.identities[0]
    async with fleet.client("admin") as fc:
        first = await run_action(fc, "rpcutil", "ping", job=JobOptions())
        second = await run_action(fc, "rpcutil", "get_fact", {"fact": "role"}, job=JobOptions())
        assert first is not None and second is not None and first.job_id and second.job_id
    async with running_console(fleet, ("role",)) as console:
        async def ready() -> bool:
            status, _ = await _get(console, f"/api/node/{me}")
            return status == 200

        await until(ready, 20, f"{me} in the registry")
        node = await _api(console, f"/api/node/{me}")
        # Newest first, each verified against the node's signature and the caller's start record.
        assert [(j["id"], j["agent"], j["action"], j["caller"]) for j in node["jobs"]] == [
            (second.job_id, "rpcutil", "get_fact", "admin"), (first.job_id, "rpcutil", "ping", "admin")]
        assert node["jobs_unverified"] == 0 and node["jobs_error"] is None
        assert "startup" in {e["kind"] for e in node["events"]}
        rpcutil = next(a for a in node["ddls"] if a["name"] == "rpcutil")
        assert rpcutil["known"] and {"ping", "get_fact", "inventory"} <= {a["name"] for a in rpcutil["actions"]}

        status, page = await _get(console, f"/node/{me}")
        assert status == 200
        assert f'href="/jobs/{second.job_id}?caller=admin"' in page and "rpcutil.get_fact" in page
        # Nested facts open and close (no script: <details>), and every value stays text.
        assert "<details><summary>osinfo" in page and "<summary>release" in page
        assert "<img src=x" not in page and html.escape(NESTED["release"]["note"], quote=False) in page


async def test_a_node_with_no_jobs_says_so_and_a_hostile_fact_stays_text(fleet: HostileFleet) -> None:
    me = fleet.identities[0]
    async with running_console(fleet, ("role",)) as console:
        async def ready() -> bool:
            return (await _get(console, f"/api/node/{me}"))[0] == 200

        await until(ready, 20, f"{me} in the registry")
        status, page = await _get(console, f"/node/{me}")
    assert status == 200 and "No stored job has a reply from this node." in page
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_nodes_whose_record_went_stale_are_marked_quiet_and_can_be_listed_alone(fleet: HostileFleet) -> None:
    async with running_console(fleet, ("role",)) as console:
        async def listed() -> bool:
            return (await _api(console, "/api/fleet"))["matched"] == 3

        await until(listed, 20, "3 nodes in the registry")
        fresh = await _api(console, "/api/fleet")
        assert fresh["quiet"] == 0 and not any(n["quiet"] for n in fresh["nodes"])
        assert console.data is not None
        console.data.quiet_after = 0.2  # as `--quiet-after 0.2`: every record is older than that soon

        async def all_quiet() -> bool:
            return (await _api(console, "/api/fleet"))["quiet"] == 3

        await until(all_quiet, 20, "every record older than 0.2 s")
        only = await _api(console, "/api/fleet?quiet=1")
        assert only["quiet_only"] and len(only["nodes"]) == 3 and all(n["quiet"] for n in only["nodes"])
        status, page = await _get(console, "/")
        assert status == 200 and "3 quiet</a>" in page and page.count('class="quiet-mark"') == 3
