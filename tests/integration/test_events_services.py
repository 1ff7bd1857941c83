"""Events of the services: the policy service's `policy_reloaded`, the audit service's `audit_backlog`.

Each event is read off a real broker and checked with the verifier readers use
(nmc.security.events): it must be signed by a certificate with the kind's role.
Synchronisation is by the events themselves, every wait bounded.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from nmc.authz.service import PolicyService, PolicyServiceSettings
from nmc.protocol.events import CloudEvent
from nmc.security.events import EventRefused, EventVerifier
from tests.integration.fleetkit import FleetCA


class EventTap:
    """A connection subscribed to nmc.events.>: genuine events queued, refusals kept."""

    def __init__(self, nc: Any, verifier: EventVerifier) -> None:
        self.nc = nc
        self.verifier = verifier
        self.events: asyncio.Queue[CloudEvent] = asyncio.Queue()
        self.refused: list[str] = []

    @classmethod
    async def open(cls, url: str, ca: FleetCA) -> EventTap:
        import nats

        tap = cls(await nats.connect(url), EventVerifier(ca.verifier(), role_names={"node": ["*.test"]}))
        await tap.nc.subscribe("nmc.events.>", cb=tap._on_msg)
        await tap.nc.flush()
        return tap

    async def _on_msg(self, msg: Any) -> None:
        try:
            self.events.put_nowait(self.verifier.check(msg.subject, msg.data, msg.headers))
        except EventRefused as exc:
            self.refused.append(str(exc))

    async def next(self, kind: str, within: float = 15) -> CloudEvent:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            event = await asyncio.wait_for(self.events.get(), max(0.1, deadline - loop.time()))
            if event.kind == kind:
                return event

    async def close(self) -> None:
        await self.nc.close()


@pytest.mark.timeout(60)
async def test_policy_service_publishes_a_signed_policy_reloaded_event(nats_url: str, test_ca: FleetCA,
                                                                       tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rpcutil.policy").write_text("policy default deny\nallow\tcert=alice\t*\t*\n")
    signer = test_ca.signer("policy-a", roles=["policy"])
    service = PolicyService(PolicyServiceSettings(collective="nmc", policydir=policies, servers=(nats_url,),
                                                  poll_interval=0.1), signer, test_ca.verifier())
    tap = await EventTap.open(nats_url, test_ca)
    try:
        await service.start(give_up_after=10)
        first = await tap.next("policy_reloaded")
        assert (first.identity, first.collective, first.role) == ("policy-a", "nmc", "policy")
        assert first.data == {"policies": 1, "files": ["rpcutil.policy"], "errors": [], "reason": "start"}

        staged = policies / ".puppet.policy.new"
        staged.write_text("policy default deny\nallow\tcert=alice\tnot-an-action-list-or-bad\n")
        os.replace(staged, policies / "puppet.policy")
        changed = await tap.next("policy_reloaded")
        assert changed.data["reason"] == "changed" and changed.data["policies"] == 2
        assert changed.data["files"] == ["puppet.policy", "rpcutil.policy"]
        assert changed.data["errors"] and all(e.startswith("puppet.policy:2") for e in changed.data["errors"])
        assert tap.refused == []
    finally:
        await service.stop()
        await tap.close()


@pytest.mark.timeout(60)
async def test_policy_events_off(nats_url: str, test_ca: FleetCA, tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    signer = test_ca.signer("policy-b", roles=["policy"])
    service = PolicyService(PolicyServiceSettings(collective="nmc", policydir=policies, servers=(nats_url,),
                                                  events=False), signer, test_ca.verifier())
    tap = await EventTap.open(nats_url, test_ca)
    try:
        await service.start(give_up_after=10)
        await tap.nc.flush()
        # The reload notice to nodes still goes out; a round trip through the broker after it shows no event came.
        await service.nc.flush()
        await tap.nc.flush()
        assert tap.events.empty()
    finally:
        await service.stop()
        await tap.close()
