"""Connecting a FleetClient: the one way a program (the `nmc` command or your own) reaches the fleet.

A broker configured by nmc lets each certificate subscribe only to its own
reply inbox, `_INBOX.<encoded certificate name>`, so the connection must use
that prefix: the name of the TLS client certificate when `tls` was marked
by `nmc.security.names.with_tls_identity` (the `nmc` command's config does
that), else the signing certificate's name. This module owns that rule, the
reconnect behaviour a client wants and the clean-up, so no caller copies it.

It takes values, not a config file: nmc.client depends on nothing in
nmc.ops or nmc.cli (`nmc.ops.config.settings` turns a config into these
values for the command).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

from nats.aio.client import Client as NATS

from nmc.client.fleet import ClientSettings, FleetClient
from nmc.security import Signer, Verifier
from nmc.security.names import inbox_prefix, tls_identity
from nmc.transport import ConnectError, connect

__all__ = ["close_quietly", "connect_nats", "fleet_session"]


async def connect_nats(servers: Sequence[str], *, name: str, tls: ssl.SSLContext | None = None,
                       connect_timeout: float = 2.0, inbox_owner: str | None = None) -> NATS:
    """A client's NATS connection; ConnectError (one line, naming the brokers) when not connected in time.

    Replies come to _INBOX.<certificate name> (see the module docstring): the
    TLS identity of `tls`, else `inbox_owner`. Two quick attempts within
    `connect_timeout`, then the error; once connected it reconnects for as long
    as the connection is open (a broker restart in the middle of a batched run
    must not end it).
    """
    owner = tls_identity(tls) or inbox_owner
    options: dict[str, Any] = {"servers": list(servers), "name": name, "connect_timeout": connect_timeout,
                               "max_reconnect_attempts": 1, "reconnect_time_wait": 0.25, "allow_reconnect": True,
                               "tls": tls}
    if owner:
        options["inbox_prefix"] = inbox_prefix(owner)
    try:
        # One deadline for nats-py's attempts (a refused one is retried once after 0.25 s).
        return await connect(options, give_up_after=connect_timeout)
    except ConnectError as exc:
        raise ConnectError(f"cannot connect to NATS at {', '.join(servers)}: {exc.reason}") from exc


async def close_quietly(nc: NATS) -> None:
    """Drain the connection (replies in flight are delivered), else close it; never raises."""
    with contextlib.suppress(Exception):
        await nc.drain()
    if not nc.is_closed:
        # drain() refuses while reconnecting (broker still away at the end): close instead.
        with contextlib.suppress(Exception):
            await nc.close()


@contextlib.asynccontextmanager
async def fleet_session(servers: Sequence[str], *, signer: Signer, verifier: Verifier,
                        settings: ClientSettings | None = None, tls: ssl.SSLContext | None = None,
                        connect_timeout: float = 2.0, name: str | None = None) -> AsyncIterator[FleetClient]:
    """A connected FleetClient signing as `signer`; the connection is drained on exit.

    `servers`: broker URLs (tls://... for a broker that wants TLS, with `tls`
    holding the CA and client certificate); `verifier`: the fleet CA every
    reply must chain to. ConnectError when no broker answers in time.
    """
    nc = await connect_nats(servers, name=name or f"nmc {signer.caller}", tls=tls,
                            connect_timeout=connect_timeout, inbox_owner=signer.name)
    try:
        yield FleetClient(nc=nc, signer=signer, verifier=verifier, settings=settings or ClientSettings())
    finally:
        await close_quietly(nc)
