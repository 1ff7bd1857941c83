"""synced_flush really means "the server has processed my SUBs" (nats-py's flush alone does not)."""

from __future__ import annotations

import asyncio

import nats

from nmc.transport.compat import synced_flush


async def test_subscriptions_are_live_after_synced_flush(nats_url):
    publisher = await nats.connect(nats_url)
    try:
        for round_ in range(60):
            subscriber = await nats.connect(nats_url)
            got: asyncio.Queue[bytes] = asyncio.Queue()

            async def on_msg(msg, got=got):
                got.put_nowait(msg.data)

            # Many SUBs buffered at once, as a node does at start-up.
            for i in range(20):
                await subscriber.subscribe(f"compat.{round_}.{i}", cb=on_msg)
            await synced_flush(subscriber)
            await publisher.publish(f"compat.{round_}.19", b"x")
            assert await asyncio.wait_for(got.get(), 2) == b"x", f"round {round_}: message missed"
            await subscriber.close()
    finally:
        await publisher.close()
