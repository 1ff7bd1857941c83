"""Work-arounds for nats-py 2.16 behaviour that nmc depends on being right.

`Client.flush()` is meant to return once the server has processed everything
sent before it. In nats-py 2.16 it does not: `_send_ping` writes PING straight
to the socket while earlier SUB/PUB commands may still sit in the client's
pending buffer (they are written later by the flusher task). The PONG can
then come back before the server has seen those SUBs, and a request published
right after "subscribing" reaches nobody. We saw exactly that: a node started
last missed the first broadcast about one run in thirty.

Flushing twice closes the gap: while the first round trip is in flight the
flusher task writes the buffered commands, so the second PING goes out behind
them on the same socket and its PONG proves the server processed them.
"""

from __future__ import annotations

from nats.aio.client import Client

__all__ = ["synced_flush"]


async def synced_flush(nc: Client, timeout: int = 10) -> None:
    """Return only after the server has processed every command sent so far."""
    await nc.flush(timeout=timeout)
    await nc.flush(timeout=timeout)
