"""One way to connect to NATS, for the client and every daemon, that never hangs and always says why.

nats-py 2.16 reports why a connection attempt failed only through `error_cb`, then
either retries forever (daemons) or raises a bare "no servers available" (the
client's bounded first attempts): the reason is lost. Worse, after a TLS handshake
failure (a broker certificate the configured CA did not issue) its clean-up waits
forever for a stream that can no longer hear it closed, so `nmc ping` hung with no
output at all (see `nmc.transport.compat.patch_tls_close`). `connect` keeps the last
reason, turns it into one line with a hint, and bounds the whole first connection by
a deadline; daemons that retry log the reason (first time, on change, then at most
every `_LOG_EVERY` seconds) instead of going silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client

from nmc.errors import TransportError
from nmc.transport.compat import patch_tls_close
from nmc.security.names import inbox_prefix, tls_identity

__all__ = ["ConnectError", "connect", "connect_error_reason", "daemon_options"]

_LOG_EVERY = 30.0  # seconds between repeated log lines of the same connect failure


class ConnectError(TransportError):
    """The first connection to the broker failed; `reason` is one line with a hint."""


def connect_error_reason(exc: BaseException | None, *, tls: Any = None, timeout: float | None = None) -> str:
    """What went wrong with a connection attempt, in words, with what to check (one line)."""
    name = tls_identity(tls)
    admits = (f"does the broker admit certificate {name!r}? A broker configured by nmc admits the certificates "
              "its CA issued before its configuration was generated, unless revoked") if name else \
        "does the broker admit this client?"
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc)
        if tls is None:  # nats-py tried the system's CAs because the broker asked for TLS
            return (f"the broker requires TLS and its certificate failed verification against the system's CAs: "
                    f"{detail} (use a tls:// URL in plugin.nats.servers with plugin.security.* set, or plugin.nats.tls_*)")
        return (f"TLS verification of the broker's certificate failed: {detail} (is plugin.security.ca_file "
                "(or plugin.nats.tls_ca) the CA that issued the broker's certificate?)")
    if isinstance(exc, ssl.SSLError):
        detail = exc.reason or str(exc)
        if "UNKNOWN_CA" in detail:
            return (f"the broker rejected this client's certificate ({detail.lower()}): the broker's CA did not "
                    "issue it (check plugin.security.cert_file, or plugin.nats.tls_cert)")
        return f"TLS handshake with the broker failed: {detail} ({admits})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running? `nmc dev up` starts one)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the broker's host name: {exc.strerror or exc} (check plugin.nats.servers)"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"no route to the broker: {exc.strerror} (check plugin.nats.servers and the network)"
    if isinstance(exc, (asyncio.TimeoutError, nats.errors.TimeoutError)):
        waited = f" after {timeout:g} s" if timeout else ""
        return f"no answer from the broker{waited} (is plugin.nats.servers right, and is it a NATS port?)"
    if isinstance(exc, (_BrokerHungUp, nats.errors.UnexpectedEOF, ConnectionResetError, BrokenPipeError)) \
            or exc is None:
        # A refused certificate usually shows as the server's -ERR, but on a busy machine the close
        # can win the race and only asyncio's "Connection lost" (a reset) is left: the same story.
        return f"the broker closed the connection during the handshake ({admits})"
    text = str(exc) or type(exc).__name__
    if "authorization" in text.lower():
        return f"the broker refused this client: {text} ({admits})"
    if "tls" in text.lower() or "secure connection" in text.lower():
        return f"{text} (the broker and plugin.nats.servers must agree on tls:// or nats://)"
    return text


def _telling(exc: BaseException) -> int:
    """How much an error says about why a connection failed (higher: more)."""
    if isinstance(exc, ssl.SSLError):
        return 3
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return 0
    if isinstance(exc, (OSError, nats.errors.Error, asyncio.TimeoutError)):
        return 2 if isinstance(exc, OSError) else 1
    return -1  # nats-py internals (AttributeError and the like) after the real failure


class _BrokerHungUp(Exception):
    """nats-py returned from connect() without a connection: the broker hung up mid-handshake."""


def daemon_options(name: str, servers: Sequence[str], tls: Any, reconnect_wait: float, *,
                   inbox: str | None = None, connect_timeout: float = 5) -> dict[str, Any]:
    """nats.connect() keywords shared by every nmc daemon: reconnect forever, quickly.

    Replies come to `_INBOX.<certificate name>`, the only inbox a broker configured by
    nmc lets the certificate subscribe to: the name of the TLS client certificate
    (marked on `tls` by nmc.ops.config.settings.tls_context), else `inbox`.
    """
    opts: dict[str, Any] = {
        "servers": list(servers), "name": name, "max_reconnect_attempts": -1,
        "reconnect_time_wait": reconnect_wait, "allow_reconnect": True, "connect_timeout": connect_timeout,
    }
    if tls is not None:
        opts["tls"] = tls
    owner = tls_identity(tls) or inbox
    if owner is not None:
        opts["inbox_prefix"] = inbox_prefix(owner)
    return opts


ErrorLog = Callable[[str, int], None]


async def connect(options: dict[str, Any], *, give_up_after: float | None = None,
                  on_retry: ErrorLog | None = None, error_cb: Callable[[Exception], Awaitable[None]] | None = None,
                  **callbacks: Any) -> Client:
    """Connect with nats-py `options`; ConnectError naming the reason if not connected in time.

    `options["max_reconnect_attempts"]` bounds the attempts of the first connection as in
    nats-py (-1: retry until `give_up_after`, or forever when that is None). `on_retry(reason,
    count)` is told why attempts fail: on the first failure, when the reason changes and
    at most every 30 s otherwise. Once connected, reconnection lasts as long as the process
    (`max_reconnect_attempts` becomes -1): every request has its own timeout anyway.
    """
    patch_tls_close()
    tls = options.get("tls")
    attempt_timeout = float(options.get("connect_timeout", 2))
    last: list[BaseException] = []
    throttle = _Throttle(on_retry)

    async def remember(exc: Exception) -> None:
        if not last or _telling(exc) >= _telling(last[0]):
            last[:] = [exc]  # a later "connection lost" or nats-py internal error must not hide a TLS alert
        if nc.is_connected or nc.is_reconnecting:
            if error_cb is not None:
                await error_cb(exc)
            return
        throttle(connect_error_reason(exc, tls=tls, timeout=attempt_timeout))

    nc = Client()
    try:
        await asyncio.wait_for(nc.connect(**options, error_cb=remember, **callbacks), give_up_after)
    except (OSError, nats.errors.Error, asyncio.TimeoutError) as exc:
        await _abandon(nc)
        cause = last[0] if last else exc
        if isinstance(exc, asyncio.TimeoutError) and not last:
            cause = exc
        raise ConnectError(connect_error_reason(cause, tls=tls, timeout=give_up_after or attempt_timeout)) from exc
    except asyncio.CancelledError:
        await _abandon(nc)
        raise
    if not nc.is_connected:
        # nats-py returns instead of raising when the broker hangs up during the TLS handshake.
        await _abandon(nc)
        raise ConnectError(connect_error_reason(last[0] if last else _BrokerHungUp(), tls=tls))
    # Bounded attempts were right for the first connection (a broker that is not there is a one-line
    # error at once); once connected, ride out broker restarts. nats-py reads this at each reconnection.
    nc.options["max_reconnect_attempts"] = -1
    return nc


async def _abandon(nc: Client) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2)


class _Throttle:
    """Calls `log(reason, failures)` on the first failure, on a new reason, then every _LOG_EVERY s."""

    def __init__(self, log: ErrorLog | None) -> None:
        self.log = log
        self.reason = ""
        self.count = 0
        self.logged_at = 0.0

    def __call__(self, reason: str) -> None:
        self.count += 1
        now = time.monotonic()
        if self.log is None:
            return
        if reason != self.reason or now - self.logged_at >= _LOG_EVERY:
            self.reason, self.logged_at = reason, now
            self.log(reason, self.count)
