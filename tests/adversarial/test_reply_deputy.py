"""Hole 8 (broker side): a node or service answers into inboxes only, even when modified.

`allow_responses` let a node, the policy service and the audit service publish to the
reply subject of anything they received, and nats-server lets that win over every deny.
Any user could hand a node the reply subject of another node's registry key or audit
subject, and the node's answer landed there. The daemons now check the reply subject
themselves (tests/adversarial/test_reply_subjects.py); these tests use raw connections,
a modified daemon that answers whatever it is handed, to show that the broker also
refuses: answers go to `_INBOX.>` and nowhere else.
"""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.msg import Msg

from nmc.transport.compat import synced_flush
from nmc.protocol.registry import registry_key
from nmc.security.names import inbox_prefix
from tests.adversarial.brokerkit import published, registry_entry, respond_refused
from tests.adversarial.kit import HostileFleet

AIMS = (
    f"$KV.nmc_registry.{registry_key('nmc', 'node1.example.net')}",  # another node's registry record
    "nmc.audit.nmc.node1%2Eexample%2Enet",  # another node's audit subject
    "nmc.nmc.all.rpcutil.ping",  # a request subject
    "$JS.API.STREAM.PURGE.NMC_AUDIT",  # the JetStream API
)
RESPONDERS = ("node9.example.net", "nmc-policy", "nmc-audit")


async def test_a_modified_daemon_cannot_answer_outside_the_inboxes(hostile: HostileFleet):
    mallory = await hostile.connect_as("mallory")
    for name in RESPONDERS:
        errors: list[str] = []
        responder = await hostile.connect_as(name, errors=errors)
        handed: asyncio.Queue[Msg] = asyncio.Queue()
        probe = f"$SRV.PING.probe-{uuid.uuid4().hex}"  # every daemon role may hear $SRV.>

        async def keep(msg: Msg) -> None:
            await handed.put(msg)

        await responder.subscribe(probe, cb=keep)
        await synced_flush(responder)
        for aim in AIMS:
            await mallory.publish(probe, b"{}", reply=aim)
            msg = await asyncio.wait_for(handed.get(), 5)
            assert msg.reply == aim
            assert await respond_refused(responder, msg, b'{"forged": true}', errors), f"{name} answered onto {aim}"
        await mallory.publish(probe, b"{}", reply=f"{inbox_prefix('mallory')}.x")
        msg = await asyncio.wait_for(handed.get(), 5)
        assert not await respond_refused(responder, msg, b"{}", errors), f"{name} cannot answer an inbox"
    errors = []
    admin = await hostile.connect_as("admin", errors=errors)
    assert (await registry_entry(admin, "node1.example.net", errors)).identity == "node1.example.net"


async def test_a_node_still_publishes_its_own_subjects(hostile: HostileFleet):
    errors: list[str] = []
    node9 = await hostile.connect_as("node9.example.net", errors=errors)
    assert await published(node9, "nmc.nmc.authz.check", b"{}", errors)
    assert await published(node9, f"{inbox_prefix('admin')}.x", b"{}", errors)
    assert not await published(node9, "nmc.nmc.all.rpcutil.ping", b"{}", errors)
