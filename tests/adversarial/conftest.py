"""Fixtures of the adversarial suite: a secure fleet (kit.HostileFleet) started and stopped per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.adversarial.kit import HostileFleet

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
async def hostile(tmp_path: Path) -> AsyncIterator[HostileFleet]:
    """A running secure fleet: TLS broker with generated permissions, policy and audit services, 3 nodes."""
    fleet = HostileFleet(tmp_path / "fleet")
    try:
        yield await fleet.start()
    finally:
        await fleet.stop()
