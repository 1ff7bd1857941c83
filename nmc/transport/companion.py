"""The narrow view of a node that a companion is started with.

A companion (the JetStream auditor, the policy watcher, the remote
authorizer, the registry publisher, the fact refresher) runs beside a node
and needs a few of its things: who it is, its NATS connection once it is
connected, and its certificate to sign with. It gets this `NodeView`, not
the whole `Node`, so it cannot reach into the request pipeline or the
service's endpoints, and so audit/ and authz/ can name the type without
importing nmc.services (services depend on them, never the other way).

It lives in transport/ because it is plumbing every daemon layer may use:
only the NATS client and the Signer, nothing about agents or facts. What
the services' own companions need in addition (the facts, the agents'
DDLs) is `nmc.services.companion.NodeHandle`, which extends this view.
"""

from __future__ import annotations

from typing import Protocol

from nats.aio.client import Client as NATS

from nmc.security import Signer

__all__ = ["NodeView"]


class NodeView(Protocol):
    """What any companion may use of the node it runs beside (read-only)."""

    @property
    def identity(self) -> str:
        """The node's identity (its certificate name)."""

    @property
    def collective(self) -> str:
        """The collective the node serves."""

    @property
    def nc(self) -> NATS | None:
        """The node's NATS connection; None before the node connected."""

    @property
    def signer(self) -> Signer:
        """The node's own certificate and key: what a companion signs its messages with."""
