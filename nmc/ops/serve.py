"""Running node daemons: from a server config to a Node that serves until told to stop."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Callable, Sequence

import structlog

from nmc.ops.config import Config, find_server_config
from nmc.ops.settings import (fact_refresh_interval, fact_sources, load_signer, load_verifier, node_settings,
                              registry_settings)
from nmc.services.agent import Agent
from nmc.services.agents import BUILTIN_AGENTS
from nmc.services.factrefresh import FactRefresher
from nmc.services.node import Companion, Node
from nmc.services.registry import RegistryPublisher

__all__ = ["build_node", "run_nodes", "server_config_path", "wait_for_signal"]

log = structlog.get_logger("nmc.serve")


async def build_node(config: Config, agents: Sequence[type[Agent]] = BUILTIN_AGENTS) -> Node:
    """A ready-to-start Node from a server config, facts collected (SettingsError/FactError/ConfigError).

    Async because collecting facts runs facter and reads files off the event loop.
    A fact source that fails here stops the daemon with one line; later refreshes only warn.
    """
    sources = fact_sources(config)
    refresher = FactRefresher(sources, interval=fact_refresh_interval(config))
    settings, signer, verifier = node_settings(config), load_signer(config), load_verifier(config)
    facts = await sources.collect(version=0)
    companions: list[Companion] = [refresher]
    registry = registry_settings(config)
    if registry is not None:
        companions.append(RegistryPublisher(registry))
    return Node(settings=settings, signer=signer, verifier=verifier, agent_classes=agents, facts=facts,
                companions=companions)


def _refreshers(node: Node) -> list[FactRefresher]:
    return [c for c in node.companions if isinstance(c, FactRefresher)]


async def wait_for_signal(hup_callback: Callable[[], None] | None = None) -> None:
    """Block until SIGINT or SIGTERM; call `hup_callback()` on every SIGHUP."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if hup_callback is not None:
        loop.add_signal_handler(signal.SIGHUP, hup_callback)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def run_nodes(pairs: Sequence[tuple[Node, Config]]) -> None:
    """Start nodes, serve until SIGINT/SIGTERM (SIGHUP re-collects facts now), then stop them cleanly."""
    for node, _ in pairs:
        await node.start()
    tasks: set[asyncio.Task[bool]] = set()

    def done(task: asyncio.Task[bool]) -> None:
        tasks.discard(task)
        # Fact-source failures are logged by the refresher; anything else must not vanish silently.
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("facts_refresh_crashed", error=str(exc) or type(exc).__name__)

    def on_hup() -> None:
        log.info("facts_reload_requested", signal="SIGHUP", nodes=len(pairs))
        for node, _ in pairs:
            for refresher in _refreshers(node):
                # The refresher logs the outcome and serialises this with its own interval refresh.
                task = asyncio.ensure_future(refresher.refresh_now())
                tasks.add(task)
                task.add_done_callback(done)

    try:
        await wait_for_signal(hup_callback=on_hup)
    finally:
        await asyncio.gather(*(node.stop() for node, _ in pairs), return_exceptions=True)


def server_config_path(explicit: str | None) -> Path | None:
    """The server.cfg to use: explicit, else NMC_SERVER_CONFIG / /etc/nmc/server.cfg."""
    if explicit:
        return Path(explicit)
    return find_server_config(os.environ, Path.home())
