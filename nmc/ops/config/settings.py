"""From a loaded Config to the values daemons and clients run with.

Config knows keys and origins; services and the client know dataclasses.
This module is the one bridge, so every "file not found" message names the
config key and where it was set.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmc.ops.config.parse import ConfigError
from nmc.ops.config.files import Config
from nmc.protocol.factindex import DEFAULT_FACT_INDEX, FactIndex
from nmc.protocol.registry import check_bucket
from nmc.security import (SecurityError, Signer, Verifier, certificate_name, load_certificate_pem,
                          load_certificates_pem)
from nmc.security.crl import CrlFile
from nmc.security.names import NamePolicy, with_tls_identity

if TYPE_CHECKING:  # imported where used: the client commands read this module and must not load the node daemon,
    # and a node daemon need not load the audit service, the policy service or the client library (issue 16: memory).
    # Nor does a client command load what only a node's settings need (issue 16: start-up of `nmc ping`): the audit
    # publisher, the authorizer settings and the protocol modules they bring, the unsigned-actions parser, shlex.
    from nmc.audit.publisher import AuditSettings
    from nmc.audit.service import AuditServiceSettings
    from nmc.audit.verify import RecordVerifier
    from nmc.authz.service import PolicyServiceSettings
    from nmc.authz.settings import AuthzSettings
    from nmc.security.events import EventVerifier
    from nmc.services.events import EventSettings
    from nmc.client.fleet import ClientSettings
    from nmc.services.facts import FactSources
    from nmc.services.node import NodeSettings
    from nmc.services.registry import RegistrySettings

__all__ = ["DEFAULT_CRL_NAME", "SettingsError", "audit_max_age", "crl_path", "crl_warning", "audit_service_settings", "audit_settings", "default_replay_path", "default_spool_path", "event_settings", "event_verifier", "parse_duration", "prometheus_endpoint", "authz_settings", "client_settings", "connect_timeout", "policy_service_settings", "fact_refresh_interval", "fact_sources", "jetstream_replicas", "load_signer", "load_verifier", "record_verifier",
           "RETIRED_AUDIT_KEYS", "node_settings", "retired_audit_keys", "registry_settings", "tls_context"]


class SettingsError(ConfigError):
    """A configuration that cannot be turned into a working setup; one line, names the key."""


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


DEFAULT_CRL_NAME = "crl.pem"


def crl_path(config: Config) -> tuple[Path | None, bool]:
    """The CRL every signature check consults, and whether it was configured (True) or is the default (False).

    `plugin.security.crl_file` when set; otherwise `crl.pem` next to
    `plugin.security.ca_file` (where `nmc ops ca` writes it in a CA directory), whether
    or not it exists yet: revocation must not depend on someone remembering a key.
    None when neither is set.
    """
    configured = config.get_path("plugin.security.crl_file")
    if configured is not None:
        return configured, True
    ca = config.get_path("plugin.security.ca_file")
    return (ca.parent / DEFAULT_CRL_NAME, False) if ca is not None else (None, False)


def crl_warning(config: Config) -> str | None:
    """Why this process would accept revoked certificates right now (no CRL anywhere), or None.

    The default CRL is watched even while it does not exist, so this is a warning for
    the start-up log, not an error: the first `nmc ops ca revoke` (or a copy of crl.pem)
    is picked up without a restart.
    """
    path, configured = crl_path(config)
    if path is None or configured or path.is_file():
        return None
    return (f"no certificate revocation list: plugin.security.crl_file is not set and {path} does not exist; "
            f"revoked certificates are accepted until a CRL appears there (picked up without a restart)")


def load_verifier(config: Config) -> Verifier:
    """The fleet CA(s) every signature must chain to, the CRL (crl_file, else crl.pem beside the CA) and name patterns."""
    ca = _required_file(config, "plugin.security.ca_file")
    try:
        cas = load_certificates_pem(ca.read_bytes())
    except SecurityError as exc:
        raise SettingsError(f"{ca}: {exc.reason}") from exc
    interval = config.get_float("plugin.security.crl_check_interval", 2.0)
    if interval is None or interval < 0:
        raise SettingsError(f"plugin.security.crl_check_interval must be 0 or more seconds "
                            f"(set at {config.origin('plugin.security.crl_check_interval')})")
    revocations: CrlFile | None = None
    path, configured = crl_path(config)
    if configured:
        crl = _required_file(config, "plugin.security.crl_file")
        try:
            revocations = CrlFile(crl, cas, check_interval=interval)
        except SecurityError as exc:
            raise SettingsError(f"plugin.security.crl_file: {exc.reason} (set at {config.origin('plugin.security.crl_file')})") from exc
    elif path is not None:
        # The CA's own crl.pem, watched even before it exists: a revocation written after start counts.
        try:
            revocations = CrlFile(path, cas, check_interval=interval, missing_ok=True)
        except SecurityError as exc:
            raise SettingsError(f"{exc.reason} (the default CRL beside plugin.security.ca_file; "
                                f"set plugin.security.crl_file to use another)") from exc
    patterns = {key[len(_ALLOWED_NAMES):]: value for key, value in config.plugin("security").items()
                if key.startswith(_ALLOWED_NAMES)}
    try:
        names = NamePolicy.from_settings(patterns)
        return Verifier(cas, revocations=revocations, names=names)
    except (SecurityError, ValueError) as exc:
        raise SettingsError(f"{ca}: {exc}") from exc


_ALLOWED_NAMES = "allowed_names."


def _uses_tls_url(config: Config) -> bool:
    return any(url.lower().startswith("tls://") for url in config.get_list("plugin.nats.servers"))


def tls_context(config: Config) -> ssl.SSLContext | None:
    """TLS (and mutual TLS when a certificate is set) to the broker, or None for plain TCP.

    With a tls:// server URL and no plugin.nats.tls_* set, the signing certificate
    (plugin.security.ca_file, cert_file, key_file) is the TLS client certificate too.
    """
    ca = config.get_path("plugin.nats.tls_ca")
    cert = config.get_path("plugin.nats.tls_cert")
    key = config.get_path("plugin.nats.tls_key")
    if ca is None and cert is None and key is None and _uses_tls_url(config):
        ca = _required_file(config, "plugin.security.ca_file")
        cert = _required_file(config, "plugin.security.cert_file")
        key = _required_file(config, "plugin.security.key_file")
    if ca is None and cert is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
            # The certificate names the NATS user, and so the inbox the connection may use.
            with_tls_identity(ctx, certificate_name(load_certificate_pem(cert.read_bytes())))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"TLS settings for the broker: {exc}") from exc
    except SecurityError as exc:
        raise SettingsError(f"TLS settings for the broker: {cert}: {exc.reason}") from exc
    return ctx


def _servers(config: Config) -> tuple[str, ...]:
    servers = tuple(config.get_list("plugin.nats.servers"))
    if not servers:
        raise SettingsError("plugin.nats.servers is empty: name at least one broker URL")
    return servers


def connect_timeout(config: Config) -> float:
    """`plugin.nats.connect_timeout`: seconds a command waits for its first connection (default 2)."""
    key = "plugin.nats.connect_timeout"
    value = config.get_float(key, 2.0)
    if value is None or value <= 0:
        raise SettingsError(f"{key} must be a number of seconds above 0, got {config.get(key)!r} "
                            f"(set at {config.origin(key)})")
    return value


def jetstream_replicas(config: Config) -> int:
    """`plugin.nats.jetstream_replicas`: how many JetStream servers keep each stream nmc creates (1 to 5)."""
    key = "plugin.nats.jetstream_replicas"
    value = config.get_int(key, 1)  # ConfigError (one line, with the origin) if not a number
    if value is None:
        return 1
    if not 1 <= value <= 5:
        raise SettingsError(f"{key} must be between 1 and 5 (JetStream's limit), got {value} "
                            f"(set at {config.origin(key)})")
    return value


def fact_index(config: Config) -> FactIndex:
    """The shared fact_index setting, parsed."""
    try:
        return FactIndex.parse(config.get("fact_index") or DEFAULT_FACT_INDEX)
    except ValueError as exc:
        raise SettingsError(f"{exc} (set at {config.origin('fact_index')})") from exc


def client_settings(config: Config) -> ClientSettings:
    """Client timeouts, collective and ttl."""
    from nmc.client.fleet import ClientSettings

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
            discovery_method=config.get("default_discovery_method") or "auto",
        )
    except ValueError as exc:
        raise SettingsError(f"{exc} (set at {config.origin('default_discovery_method')})"
                            if "discovery method" in str(exc) else str(exc)) from exc


def client_servers(config: Config) -> tuple[str, ...]:
    """Broker URLs for the client."""
    return _servers(config)


def node_settings(config: Config) -> NodeSettings:
    """Identity, collective, brokers and limits of a node daemon."""
    from nmc.services.node import NodeSettings

    return NodeSettings(
        identity=config.get("identity") or socket.getfqdn(),
        collective=config.get("main_collective") or "nmc",
        servers=_servers(config),
        max_request_bytes=config.get_int("max_request_bytes") or 1024 * 1024,
        agent_timeout=config.get_float("agent_timeout") or 60.0,
        tls=tls_context(config),
        fact_index=fact_index(config),
        agent_settings=_agent_settings(config),
        unsigned_actions=_unsigned_actions(config),
        keep_jobs=config.get_bool("jobs.enabled", True) is not False,
        **_replay_settings(config),
    )


def default_replay_path(identity: str) -> Path:
    """The node's replay file when `security.replay_file` is empty: one per identity under the state directory."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity) or "node"
    return _state_dir() / "replay" / f"{safe}.log"


def _replay_settings(config: Config) -> dict[str, Any]:
    """security.replay_file, replay_capacity, replay_per_caller and clock_skew (docs/security.md, "Replay")."""
    identity = config.get("identity") or socket.getfqdn()
    capacity = config.get_int("security.replay_capacity", 100_000)
    if capacity is None or capacity < 1:
        raise SettingsError(f"security.replay_capacity must be a whole number of at least 1 "
                            f"(set at {config.origin('security.replay_capacity')})")
    per_caller = config.get_int("security.replay_per_caller", 0)
    if per_caller is None or per_caller < 0:
        raise SettingsError(f"security.replay_per_caller must be a whole number, 0 for a tenth of "
                            f"security.replay_capacity (set at {config.origin('security.replay_per_caller')})")
    skew = config.get_float("security.clock_skew", 5.0)
    if skew is None or not skew >= 0:
        raise SettingsError(f"security.clock_skew must be 0 or more seconds "
                            f"(set at {config.origin('security.clock_skew')})")
    return {"replay_file": config.get_path("security.replay_file") or default_replay_path(identity),
            "replay_capacity": capacity, "replay_per_caller": per_caller or None, "clock_skew": skew}


def _unsigned_actions(config: Config) -> tuple[str, ...]:
    """`security.unsigned_actions`, checked for form and for a policy to ask (the node checks readonly at start)."""
    from nmc.protocol.unsigned import UnsignedConfigError, parse_unsigned_actions

    key = "security.unsigned_actions"
    names = tuple(config.get_list(key))
    try:
        parse_unsigned_actions(names)
    except UnsignedConfigError as exc:
        raise SettingsError(f"{key}: {exc.reason} (set at {config.origin(key)})") from exc
    if names and (config.get("authz.mode") or "none").strip().lower() == "none":
        # Two gates by design: this list names what may be asked unsigned, the policy who may (unsigned=nats).
        raise SettingsError(f"{key} needs authz.mode = local or service: with authz.mode = none no policy would "
                            f"decide what the unsigned caller may read (set at {config.origin(key)})")
    return names


def _agent_settings(config: Config) -> dict[str, dict[str, str]]:
    """`plugin.<name>.*` of every name the config mentions, so agents loaded later (plugins) get theirs too."""
    names = {key.split(".")[1] for key in config.settings if key.startswith("plugin.") and key.count(".") >= 2}
    return {name: config.plugin(name) for name in sorted(names)}


def _registry_bucket(config: Config) -> str:
    bucket = config.get("plugin.registry.bucket") or "nmc_registry"
    try:
        return check_bucket(bucket)
    except ValueError as exc:
        raise SettingsError(f"plugin.registry.bucket: {exc} (set at {config.origin('plugin.registry.bucket')})") from exc


def registry_settings(config: Config) -> RegistrySettings | None:
    """How the node keeps its registry record; None when registerinterval is 0 (registry off)."""
    from nmc.services.registry import RegistrySettings

    interval = config.get_float("registerinterval", 60.0)
    if interval is None or interval == 0:
        return None
    if interval < 0:
        raise SettingsError(f"registerinterval must be 0 (off) or a positive number of seconds, got {interval:g} "
                            f"(set at {config.origin('registerinterval')})")
    return RegistrySettings(bucket=_registry_bucket(config), interval=interval, replicas=jetstream_replicas(config))


def event_settings(config: Config) -> EventSettings | None:
    """Whether and how the node publishes lifecycle events (docs/events.md); None when `events.enabled` is false."""
    from nmc.services.events import EventSettings

    if not config.get_bool("events.enabled", True):
        return None
    given = (config.get("events.alive_interval") or "").strip()  # empty (the default): registerinterval's
    interval = config.get_float("events.alive_interval") if given else None
    if interval is None:
        interval = config.get_float("registerinterval", 60.0) or 60.0
    if interval < 0:
        raise SettingsError(f"events.alive_interval must be 0 (off) or a positive number of seconds, got "
                            f"{interval:g} (set at {config.origin('events.alive_interval')})")
    return EventSettings(alive_interval=interval)


def event_verifier(config: Config) -> EventVerifier:
    """What `nmc events` and the audit service check events with: the fleet CA and CRL, and `audit.node_names`."""
    from nmc.security.events import EventVerifier

    if config.get_path("plugin.security.ca_file") is None:
        raise SettingsError(f"plugin.security.ca_file is not set in {config.source or 'the configuration'}: "
                            "events are shown only when their publisher's signature verifies against the fleet CA")
    names = config.get_list("audit.node_names")
    if any(not pattern.strip() for pattern in names):
        raise SettingsError(f"audit.node_names: empty pattern (set at {config.origin('audit.node_names')})")
    return EventVerifier(load_verifier(config), role_names={"node": names}, hints={"node": "see audit.node_names"})


FACT_SOURCE_NAMES = ("builtin", "facter", "yaml")


def fact_sources(config: Config) -> FactSources:
    """Which fact sources the node reads (`factsource`), with their files and facter command."""
    import shlex

    from nmc.services.facts import FactSources

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


def _policydir(config: Config, *, required: bool) -> Path | None:
    path = config.get_path("authz.policydir")
    if path is None:
        if required:
            raise SettingsError(f"authz.policydir is not set in {config.source or 'the configuration'}: "
                                "name the directory of the .policy files")
        return None
    if not path.is_dir():
        raise SettingsError(f"authz.policydir = {path}: directory not found (set at {config.origin('authz.policydir')})")
    return path


def authz_settings(config: Config) -> AuthzSettings:
    """How the node authorizes requests: `authz.mode` and what that mode needs."""
    from nmc.authz.settings import AuthzSettings

    mode = (config.get("authz.mode") or "none").strip().lower()
    try:
        return AuthzSettings(mode=mode, policydir=_policydir(config, required=mode == "local"),
                             signers=tuple(config.get_list("authz.signers")),
                             timeout=config.get_float("authz.timeout", 2.0) or 0.0,
                             cache_ttl=config.get_float("authz.cache_ttl", 60.0) or 0.0,
                             poll_interval=config.get_float("authz.poll_interval", 1.0) or 0.0)
    except ValueError as exc:
        key = str(exc).split()[0]
        where = f" (set at {config.origin(key)})" if key in config.settings else ""
        raise SettingsError(f"{exc}{where}") from exc


def policy_service_settings(config: Config) -> PolicyServiceSettings:
    """Collective, brokers and policy directory of an `nmc serve policy` daemon."""
    from nmc.authz.service import PolicyServiceSettings

    policydir = _policydir(config, required=True)
    assert policydir is not None
    try:
        return PolicyServiceSettings(collective=config.get("main_collective") or "nmc", policydir=policydir,
                                     servers=_servers(config), tls=tls_context(config),
                                     poll_interval=config.get_float("authz.poll_interval", 1.0) or 0.0,
                                     events=config.get_bool("events.enabled", True))
    except ValueError as exc:
        raise SettingsError(f"authz.poll_interval: {exc} (set at {config.origin('authz.poll_interval')})") from exc


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float | None:
    """Seconds from `90`, `90s`, `15m`, `12h`, `30d` or `2w`; None if it is not one of those."""
    text = text.strip().lower()
    scale = _DURATION_UNITS.get(text[-1:], None) if text else None
    number = text[:-1] if scale is not None else text
    try:
        value = float(number) * (scale or 1.0)
    except ValueError:
        return None
    return value if value >= 0 and value != float("inf") else None


def _duration(config: Config, key: str, default: float) -> float:
    text = config.get(key)
    if text is None or not text.strip():
        return default
    value = parse_duration(text)
    if value is None:
        raise SettingsError(f"{key}: expected seconds or a number with s, m, h, d or w, got {text!r} "
                            f"(set at {config.origin(key)})")
    return value


def _state_dir() -> Path:
    """Where a daemon keeps state: $NMC_STATE_DIR, else /var/lib/nmc as root, else $XDG_STATE_HOME/nmc."""
    if os.environ.get("NMC_STATE_DIR"):
        return Path(os.environ["NMC_STATE_DIR"])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/nmc")
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "nmc"


def default_spool_path(identity: str) -> Path:
    """The node's audit spool when `audit.spool` is empty: one file per identity under the state directory."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity) or "node"
    return _state_dir() / "audit" / f"{safe}.spool"


def _audit_int(config: Config, key: str, default: int, minimum: int) -> int:
    value = config.get_int(key, default)
    if value is None:
        return default
    if value < minimum:
        raise SettingsError(f"{key} must be at least {minimum}, got {value} (set at {config.origin(key)})")
    return value


def audit_settings(config: Config, identity: str) -> AuditSettings | None:
    """How the node keeps audit records; None when `audit.enabled` is false."""
    from nmc.audit.publisher import AuditSettings

    if not config.get_bool("audit.enabled", True):
        return None
    try:
        return AuditSettings(spool=config.get_path("audit.spool") or default_spool_path(identity),
                             required=bool(config.get_bool("audit.required", False)),
                             ack_timeout=config.get_float("audit.ack_timeout", 2.0) or 2.0,
                             spool_max_bytes=_audit_int(config, "audit.spool_max_bytes", 1 << 30, 1),
                             max_age=audit_max_age(config), replicas=jetstream_replicas(config))
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def audit_max_age(config: Config) -> float:
    """`audit.max_age` in seconds (0: keep records forever)."""
    return _duration(config, "audit.max_age", 30 * 86400.0)


def record_verifier(config: Config) -> RecordVerifier:
    """What the audit service and `nmc audit` check records with: the fleet CA and CRL, and `audit.node_names`."""
    from nmc.audit.verify import RecordVerifier

    if config.get_path("plugin.security.ca_file") is None:
        raise SettingsError(f"plugin.security.ca_file is not set in {config.source or 'the configuration'}: audit "
                            "records are written and shown only when their node's signature verifies against "
                            "the fleet CA")
    try:
        return RecordVerifier(load_verifier(config), node_names=config.get_list("audit.node_names"))
    except ValueError as exc:
        raise SettingsError(f"{exc} (set at {config.origin('audit.node_names')})") from exc


# Keys of the audit service when it read through a durable consumer (before issue 14): still accepted, never used.
RETIRED_AUDIT_KEYS = {
    "audit.consumer": "the audit service reads NMC_AUDIT without a consumer and keeps its position in"
                      " audit.position_file (default <audit.file>.position)",
    "audit.ack_wait": "the audit service acknowledges nothing: it saves its position once records are written",
}


def retired_audit_keys(config: Config) -> list[tuple[str, str, str]]:
    """(key, where it is set, why it no longer does anything) for each retired audit key the config sets."""
    return [(key, config.origin(key), why) for key, why in RETIRED_AUDIT_KEYS.items() if config.get(key) is not None]


def audit_service_settings(config: Config) -> AuditServiceSettings:
    """The `nmc serve audit` daemon: brokers, file and position file, format, rotation, syslog."""
    from nmc.audit.service import AuditServiceSettings
    from nmc.audit.sinks import SyslogTarget

    syslog_url = (config.get("audit.syslog") or "").strip()
    try:
        syslog = SyslogTarget.parse(syslog_url) if syslog_url else None
    except ValueError as exc:
        raise SettingsError(f"audit.syslog: {exc} (set at {config.origin('audit.syslog')})") from exc
    root = os.geteuid() == 0 if hasattr(os, "geteuid") else False
    default_file = Path("/var/log/nmc/audit.jsonl") if root else _state_dir() / "audit.jsonl"
    try:
        return AuditServiceSettings(
            file=config.get_path("audit.file") or default_file,
            servers=_servers(config), tls=tls_context(config),
            format=(config.get("audit.format") or "json").strip().lower(),
            rotate_bytes=_audit_int(config, "audit.rotate_bytes", 100 << 20, 1),
            keep=_audit_int(config, "audit.keep", 10, 0),
            syslog=syslog, syslog_facility=(config.get("audit.syslog_facility") or "local0").strip().lower(),
            position_file=config.get_path("audit.position_file"),
            max_age=audit_max_age(config), replicas=jetstream_replicas(config),
            dedup_ids=_audit_int(config, "audit.dedup_ids", 100_000, 1),
            collective=config.get("main_collective") or "nmc",
            backlog_warn=_audit_int(config, "audit.backlog_warn", 1000, 0),
            events=config.get_bool("audit.events", False))
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def prometheus_endpoint(config: Config) -> tuple[str, int] | None:
    """(bind address, port) of a daemon's metrics endpoint, or None when `plugin.prometheus.port` is empty or 0."""
    key = "plugin.prometheus.port"
    text = (config.get(key) or "").strip()
    if not text:
        return None
    port = config.get_int(key)  # ConfigError (one line, with the origin) if not a number
    if port is None or port == 0:
        return None
    if not 0 < port <= 65535:
        raise SettingsError(f"{key} must be a TCP port (1 to 65535), or empty or 0 for no metrics endpoint, "
                            f"got {port} (set at {config.origin(key)})")
    bind = (config.get("plugin.prometheus.bind") or "").strip() or "127.0.0.1"
    return bind, port
