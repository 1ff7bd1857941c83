"""The console as a daemon: its NATS connection, its HTTP site and its access token, started and stopped together."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from nmc.ops.agents import AgentLoadError, agent_ddls
from nmc.ops.config.files import Config
from nmc.protocol.ddl import AgentSpec
from nmc.ops.config.settings import (
    SettingsError,
    client_servers,
    client_settings,
    connect_timeout,
    event_verifier,
    load_verifier,
    record_verifier,
    tls_context,
)
from nmc.ops.console.access import ClientCertificates, allow_list, server_context
from nmc.ops.console.app import make_app, new_token, start_site
from nmc.ops.console.data import DEFAULT_COLUMNS, QUIET_AFTER, ConsoleData
from nmc.ops.console.snapshot import MAX_AGE
from nmc.transport.connect import connect, daemon_options

__all__ = ["DEFAULT_PORT", "ConsoleService", "ConsoleTLS", "build_console", "console_tls"]

DEFAULT_PORT = 8470
log = structlog.get_logger("nmc.console")


@dataclass(frozen=True)
class ConsoleTLS:
    """HTTPS for the console: its server certificate and key, and the client certificate names it admits."""

    cert: Path
    key: Path
    allow: frozenset[str] = frozenset()  # empty: every person's certificate of the fleet CA


@dataclass
class ConsoleService:
    """`nmc serve console`: reads NATS with the config's certificate (role console), serves HTTP(S) on bind:port."""

    config: Config
    bind: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    token: str = field(default_factory=new_token)
    registry_max_age: float = MAX_AGE  # seconds one registry read serves the Fleet and Node pages
    quiet_after: float = QUIET_AFTER  # a node whose record is older than this is marked quiet
    tls: ConsoleTLS | None = None  # HTTPS and client certificates (nmc.ops.console.access)
    nc: Any = None
    data: ConsoleData | None = None
    runner: Any = None
    bound_port: int | None = None

    @property
    def url(self) -> str:
        """Where to open the console, with its token (as Jupyter prints it) unless it has none (`--no-token`)."""
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        scheme = "https" if self.tls is not None else "http"
        query = f"?{urllib.parse.urlencode({'token': self.token})}" if self.token else ""
        return f"{scheme}://{host}:{self.bound_port}/{query}"

    async def start(self, give_up_after: float | None = None) -> None:
        """Connect to the broker, then listen; logs (and returns, in `url`) the address with the token."""
        certs, context = self._client_certificates()  # a bad TLS setting stops the start before it connects
        settings = client_settings(self.config)
        opts = daemon_options("nmc-console", client_servers(self.config), tls_context(self.config), 2.0,
                              connect_timeout=connect_timeout(self.config))
        self.nc = await connect(opts, give_up_after=give_up_after)
        data = ConsoleData(self.nc, settings.collective, load_verifier(self.config), record_verifier(self.config),
                           event_verifier(self.config), bucket=settings.registry_bucket, columns=self.columns,
                           registry_max_age=self.registry_max_age, specs=_known_specs(self.config),
                           quiet_after=self.quiet_after)
        self.data = data
        try:
            self.runner, self.bound_port = await start_site(make_app(data, self.token, certs), self.bind, self.port,
                                                            context)
        except BaseException:
            await self.nc.close()
            raise
        data.warm()
        log.info("console_listening", url=self.url, bind=self.bind, port=self.bound_port,
                 client_certificates=self.tls is not None, allow=sorted(self.tls.allow) if self.tls else None)
        if not _loopback(self.bind) and self.tls is None:
            log.warning("console_not_loopback", bind=self.bind,
                        message="plain HTTP: the token and every page cross the network in the clear; "
                                "put a TLS proxy in front (docs/console.md)")

    def _client_certificates(self) -> tuple[ClientCertificates | None, ssl.SSLContext | None]:
        """Who the HTTPS console admits by certificate and its TLS context; (None, None) for plain HTTP."""
        if self.tls is None:
            if not self.token:
                raise SettingsError("the console without a token needs TLS and client certificates "
                                    "(--tls-cert and --tls-key): nothing could open it")
            return None, None
        ca = self.config.get_path("plugin.security.ca_file")
        if ca is None:
            raise SettingsError("plugin.security.ca_file is not set: the console's client certificates are "
                                "checked against the fleet CA")
        return (ClientCertificates(load_verifier(self.config), self.tls.allow),
                server_context(self.tls.cert, self.tls.key, ca))

    async def stop(self) -> None:
        """Stop listening, then close the connection."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.data is not None:
            await self.data.close()
            self.data = None
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None


def _known_specs(config: Config) -> dict[str, AgentSpec]:
    """The DDLs `nmc jobs show` would use with this config: the built-ins and the `plugindir` agents.

    A plugin that cannot be loaded is logged and left out, as the node leaves it out: its
    replies are then shown with their data keys as they came, not the console stopped.
    """
    try:
        return {name: known.spec for name, known in agent_ddls(config.get_paths("plugindir")).items()}
    except AgentLoadError as exc:
        log.warning("console_plugin_not_loaded", reason=exc.reason)
        return {name: known.spec for name, known in agent_ddls(()).items()}


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_console(config: Config, *, bind: str = "127.0.0.1", port: int = DEFAULT_PORT,
                  columns: Sequence[str] = DEFAULT_COLUMNS, token: str | None = None,
                  tls_cert: Path | None = None, tls_key: Path | None = None, allow_certs: Sequence[str] = (),
                  use_token: bool = True, quiet_after: float = QUIET_AFTER) -> ConsoleService:
    """An unstarted console from its config (a client-style config: servers, CA, certificate of role console).

    The options win over the config's plugin.console.tls_cert, tls_key and allow_certs.
    """
    return ConsoleService(config, bind=bind, port=port, columns=tuple(columns), quiet_after=quiet_after,
                          token=(token or new_token()) if use_token else "",
                          tls=console_tls(config, tls_cert, tls_key, allow_certs))


def console_tls(config: Config, cert: Path | None = None, key: Path | None = None,
                allow: Sequence[str] = ()) -> ConsoleTLS | None:
    """HTTPS settings from the options, else plugin.console.tls_cert/tls_key/allow_certs; None for plain HTTP."""
    cert = cert or config.get_path("plugin.console.tls_cert")
    key = key or config.get_path("plugin.console.tls_key")
    names = allow_list(allow) or allow_list(config.get_list("plugin.console.allow_certs"))
    if cert is None and key is None:
        if names:
            raise SettingsError("an allow list of client certificates needs TLS: set --tls-cert and --tls-key "
                                "(plugin.console.tls_cert, tls_key)")
        return None
    if cert is None or key is None:
        raise SettingsError("the console's TLS needs both a certificate and its key (--tls-cert and --tls-key, "
                            "or plugin.console.tls_cert and plugin.console.tls_key)")
    for path in (cert, key):
        if not path.is_file():
            raise SettingsError(f"console TLS: {path}: file not found")
    return ConsoleTLS(cert, key, names)
