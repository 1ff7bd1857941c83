"""From a loaded Config to the values daemons and clients run with.

Config knows keys and origins; services and the client know dataclasses.
This module is the one bridge, so every "file not found" message names the
config key and where it was set.
"""

from __future__ import annotations

import shlex
import socket
import ssl
from pathlib import Path

from nmc.client.fleet import ClientSettings
from nmc.ops.config import Config
from nmc.protocol.factindex import DEFAULT_FACT_INDEX, FactIndex
from nmc.protocol.registry import check_bucket
from nmc.security import SecurityError, Signer, Verifier
from nmc.services.facts import FactSources
from nmc.services.node import NodeSettings
from nmc.services.registry import RegistrySettings

__all__ = ["SettingsError", "client_settings", "fact_refresh_interval", "fact_sources", "load_signer", "load_verifier",
           "node_settings", "registry_settings", "tls_context"]


class SettingsError(Exception):
    """A configuration that cannot be turned into a working setup; one line, names the key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _required_file(config: Config, key: str) -> Path:
    path = config.get_path(key)
    if path is None:
        where = config.source or "the configuration"
        raise SettingsError(f"{key} is not set in {where} (try `nmc dev up` for a ready-made fleet)")
    if not path.is_file():
        raise SettingsError(f"{key} = {path}: file not found (set at {config.origin(key)})")
    return path


def load_signer(config: Config) -> Signer:
    """The certificate and key this process signs with."""
    cert = _required_file(config, "plugin.security.cert_file")
    key = _required_file(config, "plugin.security.key_file")
    try:
        return Signer.from_pem(cert.read_bytes(), key.read_bytes())
    except SecurityError as exc:
        raise SettingsError(f"{cert}: {exc.reason}") from exc


def load_verifier(config: Config) -> Verifier:
    """The fleet CA(s) every signature must chain to."""
    ca = _required_file(config, "plugin.security.ca_file")
    try:
        return Verifier.from_pem(ca.read_bytes())
    except SecurityError as exc:
        raise SettingsError(f"{ca}: {exc.reason}") from exc


def tls_context(config: Config) -> ssl.SSLContext | None:
    """TLS (and mutual TLS when a certificate is set) to the broker, or None for plain TCP."""
    ca = config.get_path("plugin.nats.tls_ca")
    cert = config.get_path("plugin.nats.tls_cert")
    key = config.get_path("plugin.nats.tls_key")
    if ca is None and cert is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"TLS settings for the broker: {exc}") from exc
    return ctx


def _servers(config: Config) -> tuple[str, ...]:
    servers = tuple(config.get_list("plugin.nats.servers"))
    if not servers:
        raise SettingsError("plugin.nats.servers is empty: name at least one broker URL")
    return servers


def fact_index(config: Config) -> FactIndex:
    """The shared fact_index setting, parsed."""
    try:
        return FactIndex.parse(config.get("fact_index") or DEFAULT_FACT_INDEX)
    except ValueError as exc:
        raise SettingsError(f"{exc} (set at {config.origin('fact_index')})") from exc


def client_settings(config: Config) -> ClientSettings:
    """Client timeouts, collective and ttl."""
    try:
        return ClientSettings(
            collective=config.get("main_collective") or "nmc",
            timeout=config.get_float("timeout") or 10.0,
            discovery_timeout=config.get_float("discovery_timeout") or 2.0,
            discovery_stall=config.get_float("discovery_stall") or 0.3,
            ttl=config.get_float("ttl") or 60.0,
            sender=socket.gethostname(),
            fact_index=fact_index(config),
            registry_bucket=_registry_bucket(config),
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def client_servers(config: Config) -> tuple[str, ...]:
    """Broker URLs for the client."""
    return _servers(config)


def node_settings(config: Config) -> NodeSettings:
    """Identity, collective, brokers and limits of a node daemon."""
    return NodeSettings(
        identity=config.get("identity") or socket.getfqdn(),
        collective=config.get("main_collective") or "nmc",
        servers=_servers(config),
        max_request_bytes=config.get_int("max_request_bytes") or 1024 * 1024,
        agent_timeout=config.get_float("agent_timeout") or 60.0,
        tls=tls_context(config),
        fact_index=fact_index(config),
    )


def _registry_bucket(config: Config) -> str:
    bucket = config.get("plugin.registry.bucket") or "nmc_registry"
    try:
        return check_bucket(bucket)
    except ValueError as exc:
        raise SettingsError(f"plugin.registry.bucket: {exc} (set at {config.origin('plugin.registry.bucket')})") from exc


def registry_settings(config: Config) -> RegistrySettings | None:
    """How the node keeps its registry record; None when registerinterval is 0 (registry off)."""
    interval = config.get_float("registerinterval", 60.0)
    if interval is None or interval == 0:
        return None
    if interval < 0:
        raise SettingsError(f"registerinterval must be 0 (off) or a positive number of seconds, got {interval:g} "
                            f"(set at {config.origin('registerinterval')})")
    return RegistrySettings(bucket=_registry_bucket(config), interval=interval)


FACT_SOURCE_NAMES = ("builtin", "facter", "yaml")


def fact_sources(config: Config) -> FactSources:
    """Which fact sources the node reads (`factsource`), with their files and facter command."""
    names = [name.lower() for name in config.get_list("factsource")]
    unknown = [name for name in names if name not in FACT_SOURCE_NAMES]
    if unknown:
        raise SettingsError(f"factsource: unknown source {unknown[0]!r} (use builtin, yaml, facter; "
                            f"set at {config.origin('factsource')})")
    command: tuple[str, ...] | None = None
    if "facter" in names:
        text = config.get("plugin.facter.command") or "facter --json"
        try:
            command = tuple(shlex.split(text))
        except ValueError as exc:
            raise SettingsError(f"plugin.facter.command: {exc} (set at {config.origin('plugin.facter.command')})") from exc
        if not command:
            command = ("facter", "--json")
    return FactSources(builtin="builtin" in names,
                       yaml_files=tuple(config.get_paths("plugin.yaml")) if "yaml" in names else (),
                       facter_command=command, classes_file=config.get_path("classesfile"))


def fact_refresh_interval(config: Config) -> float:
    """Seconds between fact refreshes; 0 means only at start and on SIGHUP."""
    interval = config.get_float("fact_refresh_interval", 300.0)
    if interval is None:
        return 300.0
    if interval < 0:
        raise SettingsError(f"fact_refresh_interval must be 0 (off) or a positive number of seconds, got {interval:g} "
                            f"(set at {config.origin('fact_refresh_interval')})")
    return interval
