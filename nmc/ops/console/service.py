"""The console as a daemon: its NATS connection, its HTTP site and its access token, started and stopped together."""

from __future__ import annotations

import contextlib
import ipaddress
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from nmc.ops.config.files import Config
from nmc.ops.config.settings import (
    client_servers,
    client_settings,
    connect_timeout,
    event_verifier,
    load_verifier,
    record_verifier,
    tls_context,
)
from nmc.ops.console.app import make_app, new_token, start_site
from nmc.ops.console.data import DEFAULT_COLUMNS, ConsoleData
from nmc.transport.connect import connect, daemon_options

__all__ = ["DEFAULT_PORT", "ConsoleService", "build_console"]

DEFAULT_PORT = 8470
log = structlog.get_logger("nmc.console")


@dataclass
class ConsoleService:
    """`nmc serve console`: reads NATS with the config's certificate (role console), serves HTTP on bind:port."""

    config: Config
    bind: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    token: str = field(default_factory=new_token)
    nc: Any = None
    runner: Any = None
    bound_port: int | None = None

    @property
    def url(self) -> str:
        """Where to open the console, with its token (as Jupyter prints it)."""
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.bound_port}/?{urllib.parse.urlencode({'token': self.token})}"

    async def start(self, give_up_after: float | None = None) -> None:
        """Connect to the broker, then listen; logs (and returns, in `url`) the address with the token."""
        settings = client_settings(self.config)
        opts = daemon_options("nmc-console", client_servers(self.config), tls_context(self.config), 2.0,
                              connect_timeout=connect_timeout(self.config))
        self.nc = await connect(opts, give_up_after=give_up_after)
        data = ConsoleData(self.nc, settings.collective, load_verifier(self.config), record_verifier(self.config),
                           event_verifier(self.config), bucket=settings.registry_bucket, columns=self.columns)
        try:
            self.runner, self.bound_port = await start_site(make_app(data, self.token), self.bind, self.port)
        except BaseException:
            await self.nc.close()
            raise
        log.info("console_listening", url=self.url, bind=self.bind, port=self.bound_port)
        if not _loopback(self.bind):
            log.warning("console_not_loopback", bind=self.bind,
                        message="plain HTTP: the token and every page cross the network in the clear; "
                                "put a TLS proxy in front (docs/console.md)")

    async def stop(self) -> None:
        """Stop listening, then close the connection."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_console(config: Config, *, bind: str = "127.0.0.1", port: int = DEFAULT_PORT,
                  columns: Sequence[str] = DEFAULT_COLUMNS, token: str | None = None) -> ConsoleService:
    """An unstarted console from its config (a client-style config: servers, CA, certificate of role console)."""
    return ConsoleService(config, bind=bind, port=port, columns=tuple(columns), token=token or new_token())
