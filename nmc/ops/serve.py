"""Running node daemons: from a server config to a Node that serves until told to stop."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Callable, Sequence

import structlog

from nmc.ops.config import Config, find_server_config
from nmc.ops.settings import load_node_facts, load_signer, load_verifier, node_settings
from nmc.services.agent import Agent
from nmc.services.agents import BUILTIN_AGENTS
from nmc.services.facts import FactError
from nmc.services.node import Node

__all__ = ["build_node", "run_nodes", "server_config_path", "wait_for_signal"]

log = structlog.get_logger("nmc.serve")


def build_node(config: Config, agents: Sequence[type[Agent]] = BUILTIN_AGENTS) -> Node:
    """A ready-to-start Node from a server config (raises SettingsError/FactError/ConfigError)."""
    return Node(settings=node_settings(config), signer=load_signer(config), verifier=load_verifier(config),
                agent_classes=agents, facts=load_node_facts(config))


async def _reload_facts(node: Node, config: Config) -> None:
    try:
        facts = load_node_facts(config, version=node.facts.version + 1)
    except FactError as exc:
        log.warning("facts_reload_failed", identity=node.identity, reason=str(exc))
        return
    await node.update_facts(facts)
    log.info("facts_reloaded", identity=node.identity, facts=len(facts.facts), classes=len(facts.classes))


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
    """Start nodes, serve until SIGINT/SIGTERM (SIGHUP re-reads facts), then stop them cleanly."""
    for node, _ in pairs:
        await node.start()
    tasks: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        for node, config in pairs:
            task = asyncio.ensure_future(_reload_facts(node, config))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    try:
        await wait_for_signal(hup_callback=on_hup)
    finally:
        await asyncio.gather(*(node.stop() for node, _ in pairs), return_exceptions=True)


def server_config_path(explicit: str | None) -> Path | None:
    """The server.cfg to use: explicit, else NMC_SERVER_CONFIG / /etc/nmc/server.cfg."""
    if explicit:
        return Path(explicit)
    return find_server_config(os.environ, Path.home())
