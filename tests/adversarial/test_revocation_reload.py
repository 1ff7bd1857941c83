"""Hole 13: revoking a certificate and reloading the broker leaves every legitimate daemon answering.

nats-server gives every connection its permissions again on a reload, and with them
forgets which reply subjects an `allow_responses` user was handed: a node (or the
policy service) that received a request before the reload could not answer it after.
No role answers through `allow_responses` any more (answers go to `_INBOX.>`, an
explicit allow), and a role's permissions do not depend on which other certificates
exist, so the documented procedure (revoke, regenerate, reload) costs nobody else
anything.
"""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from nmc.transport.compat import synced_flush
from nmc.ops import pki
from nmc.ops.broker.authorization import TrustSources, secure_broker_settings
from nmc.protocol.subjects import node_subject
from tests.adversarial.brokerkit import respond_refused
from tests.adversarial.kit import HostileFleet, until

PING_NODE9 = node_subject("nmc", "node9.example.net", "rpcutil", "ping")


async def test_revoke_regenerate_reload_and_the_fleet_keeps_answering(hostile: HostileFleet):
    # A node (raw: it holds the request while the broker reloads) and a user's request in flight.
    node_errors: list[str] = []
    node9 = await hostile.connect_as("node9.example.net", errors=node_errors)
    handed: asyncio.Queue[Msg] = asyncio.Queue()

    async def keep(msg: Msg) -> None:
        await handed.put(msg)

    await node9.subscribe(PING_NODE9, cb=keep)
    await synced_flush(node9)
    admin = await hostile.connect_as("admin")
    inbox = admin.new_inbox()
    answers = await admin.subscribe(inbox)
    await admin.publish(PING_NODE9, b"{}", reply=inbox)
    in_flight = await asyncio.wait_for(handed.get(), 5)
    mallory = await hostile.connect_as("mallory")

    async with hostile.client("admin") as fc:  # a client session open across the reload
        before = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
        assert sorted(r.identity for r in before.results if r.status == 0) == hostile.identities

        # The documented procedure: revoke, regenerate the broker configuration, reload.
        pki.revoke(hostile.layout.ca_dir, "mallory", reason="keyCompromise")
        assert hostile.broker is not None
        settings, auth = secure_broker_settings(hostile.broker.settings, TrustSources(ca_dir=hostile.layout.ca_dir))
        assert "mallory" not in {u.name for u in auth.users}
        await asyncio.to_thread(hostile.broker.reload, settings)

        assert not await respond_refused(node9, in_flight, b"answered after the reload", node_errors)
        assert (await answers.next_msg(timeout=5)).data == b"answered after the reload"
        after = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)  # policy service asked again
        assert sorted(r.identity for r in after.results if r.status == 0) == hostile.identities
    async with hostile.client("admin") as fc:  # and a new session
        again = await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
        assert sorted(r.identity for r in again.results if r.status == 0) == hostile.identities
    # The revoked user's connection is closed by the reload, and it cannot come back.
    await until(lambda: not mallory.is_connected, 5, "mallory's connection to be closed by the reload")
    with pytest.raises(Exception):  # noqa: B017 - refused at the TLS handshake: the key is no longer pinned
        await hostile.connect_as("mallory")
