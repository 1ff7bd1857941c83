"""Test helpers for a real fleet: a CA made by nmc's own code, nodes on a real nats-server.

Nodes run in the test's event loop with their own NATS connections, exactly
as `nmc dev up` and the simulator run them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmc.client.fleet import ClientSettings, FleetClient
from nmc.client.session import fleet_session
from nmc.ops import pki
from nmc.security import Signer, Verifier
from nmc.services.agent import Agent
from nmc.services.agents import BUILTIN_AGENTS
from nmc.services.facts import NodeFacts
from nmc.services.node import Companion, Node, NodeSettings


@dataclass
class FleetCA:
    """A CA directory made with `nmc.ops.pki`, handing out signers."""

    directory: Path

    def __post_init__(self) -> None:
        if not (self.directory / "ca.pem").exists():
            pki.init_ca(self.directory)

    def signer(self, name: str, **kw: Any) -> Signer:
        """Issue (or reuse) a certificate for `name` and return a Signer for it."""
        paths = pki.issued_paths(self.directory, name)
        if not paths.certificate.exists():
            pki.issue(self.directory, name, **kw)
        return Signer.from_pem(paths.certificate.read_bytes(), paths.key.read_bytes())

    def verifier(self) -> Verifier:
        """A Verifier trusting this CA."""
        return Verifier.from_pem((self.directory / "ca.pem").read_bytes())


@dataclass
class Fleet:
    """Nodes started on one broker URL; stop() stops the ones still running."""

    url: str
    ca: FleetCA
    collective: str = "nmc"
    nodes: list[Node] = field(default_factory=list)

    async def add(self, identity: str, facts: dict[str, Any] | None = None, classes: Sequence[str] = (),
                  agents: Sequence[type[Agent]] = BUILTIN_AGENTS, companions: Sequence[Companion] = (),
                  authorizer: Any = None, auditor: Any = None, **settings: Any) -> Node:
        """Start one node with these facts (and companions: one instance per node, never shared).

        `authorizer`: an Authorizer for this node only; one that is also a Companion (Local/ServiceAuthorizer)
        is started with the node. A ServiceAuthorizer made with nc=None uses the node's connection.
        `auditor`: an Auditor for this node only; one that is also a Companion (JetStreamAuditor) is started too.
        `servers=(url, ...)`: the broker URLs of this node (default: the fleet's url), e.g. servers of a cluster.
        """
        servers = tuple(settings.pop("servers", (self.url,)))
        extra: dict[str, Any] = {}
        if authorizer is not None:
            extra["authorizer"] = authorizer
            if hasattr(authorizer, "start"):
                companions = (authorizer, *companions)
        if auditor is not None:
            extra["auditor"] = auditor
            if hasattr(auditor, "start"):
                companions = (*companions, auditor)
        node = Node(settings=NodeSettings(identity=identity, collective=self.collective, servers=servers,
                                          reconnect_wait=0.1, **settings),
                    signer=self.ca.signer(identity), verifier=self.ca.verifier(), agent_classes=agents,
                    facts=NodeFacts(facts=facts or {}, classes=tuple(classes)), companions=companions, **extra)
        await node.start()
        self.nodes.append(node)
        return node

    async def add_many(self, n: int, facts_for: Callable[[int], dict[str, Any]], **kw: Any) -> list[Node]:
        """Start n nodes named node{i}.test with facts_for(i)."""
        return [await self.add(f"node{i}.test", facts_for(i), **kw) for i in range(1, n + 1)]

    def node(self, identity: str) -> Node:
        """The started node with this identity."""
        return next(n for n in self.nodes if n.identity == identity)

    async def stop(self) -> None:
        """Stop every node still connected."""
        for node in self.nodes:
            if node.nc is not None and not node.nc.is_closed:
                await node.stop()

    @contextlib.asynccontextmanager
    async def client(self, name: str = "alice", servers: Sequence[str] | None = None,
                     **settings: Any) -> AsyncIterator[FleetClient]:
        """The library's FleetClient (nmc.client.session.fleet_session) signing as `name`; with `servers`, those.

        Replies come to the signer's own inbox, the only place nodes answer; once connected it
        reconnects for as long as the session is open.
        """
        async with fleet_session(list(servers) if servers is not None else [self.url], signer=self.ca.signer(name),
                                 verifier=self.ca.verifier(),
                                 settings=ClientSettings(collective=self.collective, **settings)) as fc:
            yield fc
