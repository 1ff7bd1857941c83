"""request_many (ADR-47 scatter-gather) against a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable

import nats

from nmc.transport.compat import synced_flush
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from nmc.client.request_many import NoRespondersError, request_many
from nmc.ops.broker.server import Broker

SUBJECT = "nmc.test.ping"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    """The requesting connection."""
    client = await nats.connect(nats_url, name="requester")
    yield client
    await client.close()


@pytest.fixture
async def responder_nc(nats_url: str) -> AsyncIterator[Client]:
    """A second connection for the responders, so replies really cross the server."""
    client = await nats.connect(nats_url, name="responders")
    yield client
    await client.close()


async def _responders(nc: Client, count: int, *, replies_each: int = 1, sentinel: bool = False) -> None:
    """`count` plain subscriptions on SUBJECT, each answering `replies_each` times (then a sentinel)."""
    for index in range(count):

        async def answer(msg: Msg, index: int = index) -> None:
            for n in range(replies_each):
                await nc.publish(msg.reply, f"node-{index}-{n}".encode())
            if sentinel:
                await nc.publish(msg.reply, b"")

        await nc.subscribe(SUBJECT, cb=answer)
    # The server must know every subscription before the request is published.
    await synced_flush(nc)


async def _gather(nc: Client, **kwargs: object) -> tuple[list[bytes], float]:
    started = time.monotonic()
    replies = [msg.data async for msg in request_many(nc, SUBJECT, b"ping", **kwargs)]  # type: ignore[arg-type]
    return replies, time.monotonic() - started


async def test_max_count_returns_every_reply_without_waiting_for_timeout(nc: Client, responder_nc: Client) -> None:
    await _responders(responder_nc, 20)
    replies, elapsed = await _gather(nc, timeout=30, max_count=20)
    assert sorted(replies) == sorted(f"node-{i}-0".encode() for i in range(20))
    assert elapsed < 10


async def test_stall_ends_gathering_soon_after_the_last_reply(nc: Client, responder_nc: Client) -> None:
    await _responders(responder_nc, 20)
    replies, elapsed = await _gather(nc, timeout=60, stall=0.5)
    assert len(replies) == 20
    assert len(set(replies)) == 20
    assert elapsed < 20  # far below the 60 s total timeout


async def test_without_stall_or_count_the_total_timeout_ends_gathering(nc: Client, responder_nc: Client) -> None:
    await _responders(responder_nc, 3)
    replies, elapsed = await _gather(nc, timeout=0.5)
    assert len(replies) == 3
    assert elapsed >= 0.45


async def test_no_subscribers_raises_no_responders(nc: Client) -> None:
    with pytest.raises(NoRespondersError) as info:
        await _gather(nc, timeout=5)
    assert info.value.subject == SUBJECT
    assert str(info.value) == (
        f"no responders on {SUBJECT}: no node is subscribed (is any node running in this collective?)"
    )


async def test_one_responder_answering_several_times(nc: Client, responder_nc: Client) -> None:
    await _responders(responder_nc, 1, replies_each=5)
    replies, _ = await _gather(nc, timeout=60, stall=0.5)
    assert replies == [f"node-0-{n}".encode() for n in range(5)]


async def test_max_count_stops_before_later_replies(nc: Client, responder_nc: Client) -> None:
    await _responders(responder_nc, 1, replies_each=5)
    replies, _ = await _gather(nc, timeout=30, max_count=3)
    assert replies == [b"node-0-0", b"node-0-1", b"node-0-2"]


async def test_a_sentinel_does_not_end_anybody_elses_gathering(nc: Client, responder_nc: Client) -> None:
    """One responder's empty message is dropped: the other responders' replies still arrive (issue 14 hole 9)."""
    async def early_sentinel(msg: Msg) -> None:
        await responder_nc.publish(msg.reply, b"")  # a compromised node, answering first with "no more"

    await responder_nc.subscribe(SUBJECT, cb=early_sentinel)
    await _responders(responder_nc, 3)
    replies, _ = await _gather(nc, timeout=30, stall=0.5, max_count=3)
    assert sorted(replies) == [b"node-0-0", b"node-1-0", b"node-2-0"]


async def test_a_forged_no_responders_status_does_not_end_gathering(nc: Client, responder_nc: Client) -> None:
    """A 503 first is only a hint: replies that follow are gathered (a subscriber faked the broker's status)."""
    async def fake_503(msg: Msg) -> None:
        await responder_nc.publish(msg.reply, b"", headers={"Status": "503"})

    await responder_nc.subscribe(SUBJECT, cb=fake_503)
    await _responders(responder_nc, 2)
    replies, _ = await _gather(nc, timeout=30, stall=0.5, max_count=2)
    assert sorted(replies) == [b"node-0-0", b"node-1-0"]


async def test_header_only_reply_is_a_reply_not_a_sentinel(nc: Client, responder_nc: Client) -> None:
    # nats micro's respond_error sends headers and an empty body: that is an answer.
    async def answer(msg: Msg) -> None:
        await responder_nc.publish(msg.reply, b"", headers={"Nats-Service-Error-Code": "500"})

    await responder_nc.subscribe(SUBJECT, cb=answer)
    await synced_flush(responder_nc)
    msgs = [msg async for msg in request_many(nc, SUBJECT, b"", timeout=30, max_count=1)]
    assert len(msgs) == 1
    assert msgs[0].headers == {"Nats-Service-Error-Code": "500"}


async def test_request_headers_reach_the_responders(nc: Client, responder_nc: Client) -> None:
    async def echo(msg: Msg) -> None:
        await responder_nc.publish(msg.reply, (msg.headers or {}).get("Nmc-Request-Id", "none").encode())

    await responder_nc.subscribe(SUBJECT, cb=echo)
    await synced_flush(responder_nc)
    msgs = [m async for m in request_many(nc, SUBJECT, b"x", headers={"Nmc-Request-Id": "r-1"}, timeout=30, max_count=1)]
    assert [m.data for m in msgs] == [b"r-1"]


async def test_consumer_time_does_not_count_against_stall_or_timeout(nc: Client, responder_nc: Client) -> None:
    await _responders(responder_nc, 1, replies_each=3)
    received = []
    async for msg in request_many(nc, SUBJECT, b"ping", timeout=0.5, stall=0.1):
        received.append(msg.data)
        # Slow processing of each reply (longer than the stall, and in total
        # longer than the timeout) must not cost the replies already arrived.
        await asyncio.sleep(0.3)
    assert received == [b"node-0-0", b"node-0-1", b"node-0-2"]


def _subscriptions_of(broker: Broker, name: str) -> list[str]:
    with urllib.request.urlopen(f"{broker.monitor_url}/connz?subs=1", timeout=5) as resp:
        connz = json.load(resp)
    return [sub for conn in connz["connections"] if conn.get("name") == name for sub in conn.get("subscriptions_list", [])]


async def test_early_break_unsubscribes_the_inbox(nats_server_factory: Callable[..., Broker]) -> None:
    broker = nats_server_factory(http_port=0, store_dir=None)
    requester = await nats.connect(broker.url, name="requester")
    responders = await nats.connect(broker.url, name="responders")
    try:
        await _responders(responders, 5)
        inbox = None
        async with contextlib.aclosing(request_many(requester, SUBJECT, b"ping", timeout=30)) as replies:
            async for msg in replies:
                inbox = msg.subject
                await synced_flush(requester)
                assert inbox in await asyncio.to_thread(_subscriptions_of, broker, "requester")
                break
        await synced_flush(requester)  # the UNSUB has reached the server
        assert inbox is not None
        assert inbox not in await asyncio.to_thread(_subscriptions_of, broker, "requester")
    finally:
        await requester.close()
        await responders.close()


async def test_unsubscribes_after_normal_end(nats_server_factory: Callable[..., Broker]) -> None:
    broker = nats_server_factory(http_port=0, store_dir=None)
    requester = await nats.connect(broker.url, name="requester")
    responders = await nats.connect(broker.url, name="responders")
    try:
        await _responders(responders, 2)
        msgs = [m async for m in request_many(requester, SUBJECT, b"ping", timeout=30, max_count=2)]
        await synced_flush(requester)
        assert msgs
        assert msgs[0].subject not in await asyncio.to_thread(_subscriptions_of, broker, "requester")
    finally:
        await requester.close()
        await responders.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "request timeout must be positive, got 0"),
        ({"timeout": 1, "stall": -1}, "stall must not be negative"),
        ({"timeout": 1, "max_count": 0}, "max_count must be at least 1"),
    ],
)
async def test_bad_limits_are_one_line_errors(nc: Client, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await _gather(nc, **kwargs)


async def test_stall_grows_with_the_pauses_already_seen(nc: Client, responder_nc: Client) -> None:
    # A slow fleet answers in bursts: a pause of 0.4 s, then one of 0.6 s, longer than the 0.5 s
    # stall. Having seen the first pause, gathering waits long enough for the second (a fixed
    # stall ended here and lost the last burst); then it still ends on its own, long before the timeout.
    async def bursts(msg: Msg) -> None:
        for name, pause in (("first", 0.4), ("second", 0.6), ("third", 0.0)):
            await responder_nc.publish(msg.reply, name.encode())
            await responder_nc.flush()
            await asyncio.sleep(pause)

    await responder_nc.subscribe(SUBJECT, cb=bursts)
    await synced_flush(responder_nc)
    replies, elapsed = await _gather(nc, timeout=60, stall=0.5)
    assert replies == [b"first", b"second", b"third"]
    assert elapsed < 30
