"""Fixtures for tests that run nodes: a CA made by nmc's code and a fleet on a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nmc.ops.broker.server import Broker
from tests.integration.fleetkit import Fleet, FleetCA
from tests.integration.puppetkit import PuppetSite


@pytest.fixture
def test_ca(tmp_path: Path) -> FleetCA:
    """A fresh fleet CA in tmp_path."""
    return FleetCA(tmp_path / "ca")


@pytest.fixture
async def fleet(nats_server: Broker, test_ca: FleetCA) -> AsyncIterator[Fleet]:
    """An empty fleet on the `nats_server` broker; add nodes with `await fleet.add(...)`."""
    f = Fleet(url=nats_server.url, ca=test_ca)
    yield f
    await f.stop()


@pytest.fixture
async def puppet_site(fleet: Fleet, tmp_path: Path) -> AsyncIterator[PuppetSite]:
    """Per-node Puppet directories; runs still going at the end are stopped before the fleet stops."""
    site = PuppetSite(tmp_path / "puppet", fleet)
    yield site
    await site.stop_runs()
