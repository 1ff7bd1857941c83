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

`TcpTransport.wait_closed()` hangs forever after a failed TLS upgrade: `start_tls`
took the socket's transport away from the plain stream, so that stream never hears
the socket close, and nats-py's clean-up after the failed attempt awaits it. A
client whose CA did not issue the broker's certificate then waited silently
forever. `patch_tls_close` makes the wait return when the stream has lost its
transport (tests/integration/test_connect_errors.py fails without it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client
from nats.aio.transport import TcpTransport

__all__ = ["patch_tls_close", "synced_flush"]


async def synced_flush(nc: Client, timeout: int = 10) -> None:
    """Return only after the server has processed every command sent so far."""
    await nc.flush(timeout=timeout)
    await nc.flush(timeout=timeout)


_PATCHED = "_nmc_tls_close_patched"


def patch_tls_close() -> None:
    """Make nats-py's TcpTransport.wait_closed() return after a failed TLS upgrade (idempotent)."""
    if getattr(TcpTransport, _PATCHED, False):
        return
    original = TcpTransport.wait_closed

    async def wait_closed(self: Any) -> Any:
        writer = getattr(self, "_io_writer", None)
        if writer is not None and not isinstance(writer.transport.get_protocol(), asyncio.StreamReaderProtocol):
            return None  # the socket now belongs to a failed TLS upgrade: this stream will never see it close
        return await original(self)

    TcpTransport.wait_closed = wait_closed  # type: ignore[method-assign]
    setattr(TcpTransport, _PATCHED, True)
