"""MCollective-style configuration: server.cfg / client.cfg, plugin.d, environment.

Precedence, lowest first: the defaults in :data:`KNOWN_KEYS`, the main file,
each ``plugin.d/<name>.cfg`` next to it (sorted by file name), then
``NMC_<KEY>`` environment variables. Every value remembers where it came
from so ``nmc config show`` can answer "why is this set?".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from nmc.ops.config.parse import (
    RESERVED_ENV,
    ConfigError,
    dropin_key,
    env_key,
    is_valid_key,
    parse_bool,
    parse_cfg,
    parse_float,
    parse_int,
)

_T = TypeVar("_T")

__all__ = [
    "KINDS",
    "KNOWN_KEYS",
    "RESERVED_ENV",
    "Config",
    "ConfigError",
    "KeySpec",
    "Setting",
    "etc_dir",
    "find_client_config",
    "find_server_config",
    "load_config",
]

KINDS = ("client", "server")
_BOTH = KINDS
_CLIENT = ("client",)
_SERVER = ("server",)


@dataclass(frozen=True)
class KeySpec:
    """What nmc knows about one setting: its default and what it is for."""

    default: str
    description: str
    kinds: tuple[str, ...] = _BOTH
    is_path: bool = False

    def __post_init__(self) -> None:
        if not self.kinds or not set(self.kinds) <= set(KINDS):
            raise ValueError(f"kinds must be drawn from {KINDS}, got {self.kinds!r}")


KNOWN_KEYS: Mapping[str, KeySpec] = MappingProxyType({
    "main_collective": KeySpec("nmc", "collective (subject namespace) to use"),
    "identity": KeySpec("", "the node's name; empty means the host's FQDN", _SERVER),
    "loglevel": KeySpec("info", "log level: debug, info, warning or error"),
    "logfile": KeySpec("", "file to log to; empty means stderr", is_path=True),
    "plugin.nats.servers": KeySpec("nats://127.0.0.1:4222", "comma-separated broker URLs"),
    "plugin.nats.jetstream_replicas": KeySpec("1", "JetStream servers that keep each stream nmc creates (NMC_AUDIT,"
                                              " the registry bucket): 3 in a 3-server cluster survives losing one;"
                                              " more than 1 needs a cluster (docs/clusters.md)"),
    "plugin.nats.connect_timeout": KeySpec("2", "seconds a command waits for its first connection to the broker"
                                           " before it says why it failed", _CLIENT),
    "plugin.nats.tls_ca": KeySpec("", "CA that signed the broker's TLS certificate (all three tls_* unset and a"
                                  " tls:// URL: the plugin.security.* files are used)", is_path=True),
    "plugin.nats.tls_cert": KeySpec("", "TLS client certificate for the broker", is_path=True),
    "plugin.nats.tls_key": KeySpec("", "key of the TLS client certificate", is_path=True),
    "plugin.security.ca_file": KeySpec("", "the fleet CA certificate", is_path=True),
    "plugin.security.cert_file": KeySpec("", "this process's certificate, used to sign", is_path=True),
    "plugin.security.key_file": KeySpec("", "this process's private key, used to sign", is_path=True),
    "plugin.security.crl_file": KeySpec("", "certificate revocation list (PEM, signed by the CA); re-read when it"
                                        " changes; empty: crl.pem beside plugin.security.ca_file, watched even"
                                        " before it exists", is_path=True),
    "plugin.security.crl_check_interval": KeySpec("2", "seconds between checks whether crl_file changed"),
    "security.unsigned_actions": KeySpec("", "agent.action names this node answers WITHOUT a signature, comma-separated"
                                         " (e.g. rpcutil.ping, rpcutil.get_fact): read-only actions only, caller"
                                         " unsigned=nats, needs authz.mode local or service; empty = off"
                                         " (docs/nats-tools.md)", _SERVER),
    "security.replay_file": KeySpec("", "file where the node records the id of every request it runs, so a restart"
                                    " does not run one twice; empty: /var/lib/nmc/replay/<identity>.log as root,"
                                    " else $XDG_STATE_HOME/nmc/replay/<identity>.log (docs/security.md#replay)",
                                    _SERVER, is_path=True),
    "security.replay_capacity": KeySpec("100000", "most unexpired request ids a node remembers; when full it"
                                        " refuses new requests (it never forgets an unexpired one)", _SERVER),
    "security.replay_per_caller": KeySpec("0", "most unexpired request ids a node remembers per caller; 0 = a"
                                          " tenth of security.replay_capacity", _SERVER),
    "security.clock_skew": KeySpec("5", "seconds a request's time may lie in the future (the caller's clock"
                                   " ahead of the node's); also how long a node that lost its replay file"
                                   " refuses everything after its start", _SERVER),
    "plugin.yaml": KeySpec("", "YAML facts file(s), several separated by ':'", _SERVER, is_path=True),
    "classesfile": KeySpec("", "classes file, one class per line", _SERVER, is_path=True),
    "factsource": KeySpec("builtin,yaml", "fact sources, comma-separated: builtin, yaml, facter; whatever"
                          " the order, yaml beats facter beats builtin", _SERVER),
    "fact_refresh_interval": KeySpec("300", "seconds between fact refreshes (MCollective's fact_cache_time);"
                                     " 0 = only at start and on SIGHUP", _SERVER),
    "plugin.facter.command": KeySpec("facter --json", "command printing facts as a JSON object (shell-style"
                                     " quoting, no shell)", _SERVER),
    "ttl": KeySpec("60", "seconds a request is valid"),
    "fact_index": KeySpec("*,os.family,os.name,os.release.major,os.release.full",
                          "facts that get routing subjects: * = every top-level fact, dotted paths, -name excludes;"
                          " must be the same on clients and nodes"),
    "max_request_bytes": KeySpec("1048576", "largest request accepted, in bytes"),
    "default_discovery_method": KeySpec("auto", "how commands find nodes without --dm: auto (the registry when it"
                                        " lists any node, else broadcast), broadcast or registry", _CLIENT),
    "discovery_timeout": KeySpec("2", "seconds broadcast discovery waits at most", _CLIENT),
    "discovery_stall": KeySpec("0.3", "discovery ends when no new reply came for this many seconds", _CLIENT),
    "timeout": KeySpec("10", "seconds an rpc waits for replies at most", _CLIENT),
    "agent_timeout": KeySpec("60", "default seconds an action may run", _SERVER),
    "registerinterval": KeySpec("60", "seconds between registry updates; 0 disables the registry", _SERVER),
    "plugin.registry.bucket": KeySpec("nmc_registry", "JetStream key-value bucket of the node registry"),
    # The web console (`nmc serve console`, docs/console.md#access): HTTPS with client certificates.
    "plugin.console.tls_cert": KeySpec("", "web console: its HTTPS server certificate; with tls_key the console"
                                       " serves HTTPS and admits people's client certificates of the fleet CA",
                                       _CLIENT, is_path=True),
    "plugin.console.tls_key": KeySpec("", "web console: the key of plugin.console.tls_cert", _CLIENT, is_path=True),
    "plugin.console.allow_certs": KeySpec("", "web console with TLS: the only client certificate names it admits,"
                                          " comma-separated; empty: any certificate of role user or auditor",
                                          _CLIENT),
    # Lifecycle events (docs/events.md).
    "events.enabled": KeySpec("true", "publish signed lifecycle events (startup, alive, facts changed, shutdown)"
                              " on nmc.events.<collective>.<kind>.<identity>", _SERVER),
    "events.alive_interval": KeySpec("", "seconds between alive events; empty: registerinterval (60 when that"
                                     " is 0); 0 = no alive events", _SERVER),
    # Auditing (docs/audit.md): node keys first, then the audit service's (`nmc serve audit`).
    "jobs.enabled": KeySpec("true", "client: record every rpc as a job in NMC_JOBS (docs/jobs.md); node: keep the"
                            " signed replies of job requests there"),
    "audit.enabled": KeySpec("true", "write an audit record (PROTOCOL.md section 6) before and after every action"
                             " to the JetStream stream NMC_AUDIT", _SERVER),
    "audit.spool": KeySpec("", "file where records wait while the stream cannot take them; empty:"
                           " /var/lib/nmc/audit/<identity>.spool as root, else"
                           " $XDG_STATE_HOME/nmc/audit/<identity>.spool", _SERVER, is_path=True),
    "audit.spool_max_bytes": KeySpec("1073741824", "largest spool, in bytes; beyond it records are lost"
                                     " (or actions refused with audit.required)", _SERVER),
    "audit.required": KeySpec("false", "refuse to run actions while neither the stream nor the spool can keep"
                              " the audit record", _SERVER),
    "audit.ack_timeout": KeySpec("2", "seconds a node waits for the stream to acknowledge a record before it"
                                 " spools it", _SERVER),
    "audit.max_age": KeySpec("30d", "how long NMC_AUDIT keeps records: seconds or a number with s, m, h, d;"
                             " 0 = forever (used when a daemon creates the stream; with nmc's broker"
                             " permissions the operator's `nmc audit setup` does)", _SERVER),
    "audit.file": KeySpec("", "audit service: the file it writes; empty: /var/log/nmc/audit.jsonl as root,"
                          " else $XDG_STATE_HOME/nmc/audit.jsonl", _SERVER, is_path=True),
    "audit.format": KeySpec("json", "audit service: file format, json (one JSON object per line) or mcollective"
                            " (MCollective's one-line format)", _SERVER),
    "audit.rotate_bytes": KeySpec("104857600", "audit service: rotate the file when it would grow past this many"
                                  " bytes", _SERVER),
    "audit.keep": KeySpec("10", "audit service: rotated files to keep (<file>.1 is the newest)", _SERVER),
    "audit.syslog": KeySpec("", "audit service: also send every record to syslog (RFC 5424): udp://host:port,"
                            " tcp://host:port or unix:///dev/log; empty: off", _SERVER),
    "audit.syslog_facility": KeySpec("local0", "audit service: syslog facility", _SERVER),
    "audit.position_file": KeySpec("", "audit service: file where it keeps the next NMC_AUDIT sequence to read"
                                   " (saved once the records before it are written); empty: <audit.file>.position",
                                   _SERVER, is_path=True),
    "audit.dedup_ids": KeySpec("100000", "audit service: how many recently written record ids it remembers to"
                               " drop duplicates", _SERVER),
    "audit.node_names": KeySpec("", "audit service and `nmc audit`: name patterns (fnmatch, comma-separated) of"
                                " certificates without any role that count as nodes (a Puppet CA's); certificates"
                                " with roles must have the role node"),
    "authz.mode": KeySpec("none", "authorization: none (allow everything; never in production), local (evaluate"
                          " authz.policydir here) or service (ask the nmc-policy service)", _SERVER),
    "authz.policydir": KeySpec("", "directory of <agent>.policy, default.policy and groups (local mode and"
                               " the policy service)", _SERVER, is_path=True),
    "authz.signers": KeySpec("", "certificate names whose policy answers are trusted, comma-separated"
                             " (service mode)", _SERVER),
    "authz.timeout": KeySpec("2", "seconds to wait for a trusted policy answer before denying (service mode)",
                             _SERVER),
    "authz.cache_ttl": KeySpec("60", "seconds a policy decision is cached; 0 = ask for every request"
                               " (service mode)", _SERVER),
    "authz.poll_interval": KeySpec("1", "seconds between checks of authz.policydir for changed files (local mode"
                                   " and the policy service); raise it for many nodes per machine", _SERVER),
    "plugindir": KeySpec("", "directory of agent plugins (*.py), several separated by ':'; clients read it"
                         " to know the agents' DDLs", is_path=True),
    # Built-in agents (docs/builtin-agents.md). Commands are argv templates: shell-style quoting, no shell.
    "plugin.package.install_command": KeySpec("apt-get install -y {package}", "package install command;"
                                              " {package} is NAME=VERSION when a version is asked and"
                                              " {version} is not used", _SERVER),
    "plugin.package.uninstall_command": KeySpec("apt-get remove -y {package}", "package uninstall command",
                                                _SERVER),
    "plugin.package.update_command": KeySpec("apt-get install -y --only-upgrade {package}",
                                             "package upgrade command", _SERVER),
    "plugin.package.status_command": KeySpec(r"dpkg-query -W -f='${Status}\t${Version}\t${Architecture}\n'"
                                             " {package}", "command printing dpkg-query's"
                                             " Status<TAB>Version<TAB>Architecture of {package}", _SERVER),
    "plugin.service.backend": KeySpec("auto", "service agent backend: auto (systemctl when systemd runs the"
                                      " host), systemctl or service", _SERVER),
    "plugin.service.status_command": KeySpec("", "service status command with {service}; empty: the"
                                             " backend's", _SERVER),
    "plugin.service.start_command": KeySpec("", "service start command; empty: the backend's", _SERVER),
    "plugin.service.stop_command": KeySpec("", "service stop command; empty: the backend's", _SERVER),
    "plugin.service.restart_command": KeySpec("", "service restart command; empty: the backend's", _SERVER),
    "plugin.shell.enabled": KeySpec("false", "DANGEROUS: true lets callers run any command line on this node"
                                    " with the shell agent", _SERVER),
    "plugin.shell.max_output": KeySpec("65536", "bytes of stdout and of stderr the shell agent returns",
                                       _SERVER),
    # The puppet agent (docs/puppet.md). Empty paths: Puppet's AIO paths, or Debian's puppet package's.
    "plugin.puppet.command": KeySpec("puppet agent --onetime --no-daemonize --verbose", "command a Puppet run"
                                     " starts (shell-style quoting, no shell); --noop and --tags are appended",
                                     _SERVER),
    "plugin.puppet.statedir": KeySpec("", "Puppet's statedir (absolute) with its run and disable lock files;"
                                      " empty: /opt/puppetlabs/puppet/cache/state or /var/cache/puppet/state",
                                      _SERVER),
    "plugin.puppet.summary": KeySpec("", "Puppet's last_run_summary.yaml (absolute); empty:"
                                     " /opt/puppetlabs/puppet/public/... or /var/cache/puppet/public/...", _SERVER),
    "plugin.puppet.pidfile": KeySpec("", "pidfile of a puppet agent daemon, for status idling/stopped; empty:"
                                     " /var/run/puppetlabs/agent.pid or /run/puppet/agent.pid", _SERVER),
    "plugin.puppet.splaylimit": KeySpec("30", "longest random wait, in seconds, of runonce with splay", _SERVER),
    "plugin.prometheus.port": KeySpec("", "daemons (node, policy, audit): serve Prometheus metrics on this TCP port"
                                      " at /metrics; empty or 0: no endpoint (docs/metrics.md)", _SERVER),
    "plugin.prometheus.bind": KeySpec("127.0.0.1", "address the metrics endpoint listens on; 0.0.0.0 or :: lets"
                                      " other hosts scrape it (the metrics are not secret, but not public either)",
                                      _SERVER),
})


@dataclass(frozen=True)
class Setting:
    """One effective value and where it came from.

    ``origin`` is ``"<path>:<line>"``, ``"env NMC_X"``, ``"default"`` or the
    origin given to :meth:`Config.with_overrides`. ``base_dir`` is what a
    relative path in ``value`` is relative to (None: the current directory).
    """

    key: str
    value: str
    origin: str
    base_dir: Path | None = field(default=None, compare=False)


def _origin_location(origin: str) -> tuple[str | None, int | None]:
    """Split a ``path:line`` origin into its parts; (None, None) for others."""
    path, sep, line = origin.rpartition(":")
    if sep and path and line.isdigit():
        return path, int(line)
    return None, None


@dataclass(frozen=True)
class Config:
    """The merged configuration of one client or server process."""

    settings: Mapping[str, Setting]
    source: Path | None = None
    kind: str = "client"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        # A read-only view, so a Config handed around can never change under anyone.
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key``, or ``default`` if nothing sets it."""
        setting = self.settings.get(key.lower())
        return default if setting is None else setting.value

    def origin(self, key: str) -> str:
        """Where the value of ``key`` came from; raises KeyError if unset."""
        return self.settings[key.lower()].origin

    def _bad_value(self, setting: Setting, expected: str) -> ConfigError:
        """The error for a value that does not parse, naming key, value and origin."""
        reason = f"{setting.key}: expected {expected}, got {setting.value!r}"
        path, line = _origin_location(setting.origin)
        if path is None:
            reason += f" (from {setting.origin})"
        return ConfigError(reason, path, line)

    def _typed(self, key: str, default: _T | None, parse: Callable[[str], _T | None], expected: str) -> _T | None:
        """``key`` parsed by ``parse``; ``default`` if unset; ConfigError naming ``expected`` if it does not parse."""
        setting = self.settings.get(key.lower())
        if setting is None:
            return default
        value = parse(setting.value)
        if value is None:
            raise self._bad_value(setting, expected)
        return value

    def get_int(self, key: str, default: int | None = None) -> int | None:
        """``key`` as an integer; ``default`` if unset; ConfigError if not a number."""
        return self._typed(key, default, parse_int, "an integer")

    def get_float(self, key: str, default: float | None = None) -> float | None:
        """``key`` as a finite number; ``default`` if unset; ConfigError otherwise."""
        return self._typed(key, default, parse_float, "a number")

    def get_bool(self, key: str, default: bool | None = None) -> bool | None:
        """``key`` as true/false/yes/no/1/0/on/off; ``default`` if unset."""
        return self._typed(key, default, parse_bool, "true/false, yes/no, on/off or 1/0")

    def get_list(self, key: str) -> list[str]:
        """``key`` split on commas, items stripped, empty items dropped."""
        return [item.strip() for item in (self.get(key) or "").split(",") if item.strip()]

    def _resolve(self, setting: Setting, text: str) -> Path:
        """``text`` as a path: ``~`` expanded, relative to where it was set."""
        path = Path(text).expanduser()
        if path.is_absolute():
            return path
        return (setting.base_dir or Path.cwd()) / path

    def get_path(self, key: str) -> Path | None:
        """``key`` as a path resolved against the file that set it; None if unset or empty."""
        setting = self.settings.get(key.lower())
        if setting is None or not setting.value.strip():
            return None
        return self._resolve(setting, setting.value.strip())

    def get_paths(self, key: str) -> list[Path]:
        """``key`` as a ':'-separated list of paths, each resolved like :meth:`get_path`."""
        setting = self.settings.get(key.lower())
        if setting is None:
            return []
        return [self._resolve(setting, part.strip()) for part in setting.value.split(":") if part.strip()]

    def plugin(self, name: str) -> dict[str, str]:
        """Every ``plugin.<name>.*`` setting, keyed by the rest of its name."""
        prefix = f"plugin.{name.lower()}."
        return {key[len(prefix) :]: s.value for key, s in sorted(self.settings.items()) if key.startswith(prefix)}

    def with_overrides(self, mapping: Mapping[str, str], origin: str = "command line") -> Config:
        """A copy with ``mapping`` applied on top; relative paths are relative to the current directory."""
        merged = dict(self.settings)
        cwd = Path.cwd()
        for raw_key, value in mapping.items():
            key = raw_key.lower()
            if not is_valid_key(key):
                raise ConfigError(f"invalid setting name {raw_key!r}")
            if not isinstance(value, str):
                raise ConfigError(f"{key}: value must be a string, got {type(value).__name__}")
            merged[key] = Setting(key, value, origin, cwd)
        return Config(merged, self.source, self.kind)


def _read_text(path: Path, *, main: bool) -> str:
    """The text of a config file; OS and encoding problems become ConfigError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", str(path)) from None
    except IsADirectoryError:
        raise ConfigError(f"config file is a directory: {path}", str(path)) from None
    except OSError as exc:
        what = "config file" if main else "plugin.d file"
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}", str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file is not UTF-8 text: {path}", str(path)) from None


def _dropins(directory: Path) -> list[Path]:
    """The ``*.cfg`` files in ``directory``, sorted by name; hidden files skipped."""
    if not directory.is_dir():
        return []
    return sorted(
        (f for f in directory.iterdir() if f.suffix == ".cfg" and not f.name.startswith(".") and f.is_file()),
        key=lambda f: f.name,
    )


def _dropin_settings(path: Path) -> Iterator[Setting]:
    """The settings ``plugin.d/<name>.cfg`` makes: its keys live under ``plugin.<name>.``."""
    for key, value, line in parse_cfg(_read_text(path, main=False), str(path)):
        full = dropin_key(path.stem, key)
        if not is_valid_key(full):
            raise ConfigError(f"{full!r} is not a valid setting name", str(path), line)
        yield Setting(full, value, f"{path}:{line}", path.parent)


def load_config(
    path: str | Path | None,
    *,
    kind: str = "client",
    env: Mapping[str, str] | None = None,
) -> Config:
    """Merge defaults, ``path``, its ``plugin.d`` drop-ins and the environment.

    ``path`` None means defaults and environment only; ``env`` None means
    ``os.environ``. Raises :class:`ConfigError` for a missing or malformed file.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    environ = os.environ if env is None else env
    settings: dict[str, Setting] = {
        key: Setting(key, spec.default, "default") for key, spec in KNOWN_KEYS.items() if kind in spec.kinds
    }
    source: Path | None = None
    if path is not None:
        # Absolute, so origins are unambiguous and relative values resolve the
        # same whatever the current directory is later.
        source = Path(path).expanduser().absolute()
        text = _read_text(source, main=True)
        for key, value, line in parse_cfg(text, str(source)):
            settings[key] = Setting(key, value, f"{source}:{line}", source.parent)
        for dropin in _dropins(source.parent / "plugin.d"):
            for setting in _dropin_settings(dropin):
                settings[setting.key] = setting
    cwd = Path.cwd()
    for name in sorted(environ):
        env_setting = env_key(name)
        if env_setting is not None:
            settings[env_setting] = Setting(env_setting, environ[name].strip(), f"env {name}", cwd)
    return Config(settings, source, kind)


def _from_env(value: str, home: Path) -> Path:
    """A path named in an environment variable, ``~`` meaning ``home``."""
    if value == "~" or value.startswith("~/"):
        return home / value[2:]
    return Path(value)


def etc_dir(env: Mapping[str, str], home: Path) -> Path:
    """The system-wide config directory: $NMC_ETC_DIR, else /etc/nmc.

    For packagings that keep configuration elsewhere (/usr/local/etc/nmc), and for
    tests that must not pick up a real machine's /etc/nmc.
    """
    return _from_env(env["NMC_ETC_DIR"], home) if env.get("NMC_ETC_DIR") else Path("/etc/nmc")


def find_client_config(env: Mapping[str, str], home: Path, *, etc: Path | None = None) -> Path | None:
    """The client.cfg to use: $NMC_CONFIG, ~/.nmc, /etc/nmc ($NMC_ETC_DIR), then the dev fleet's.

    $NMC_CONFIG is returned even if missing, so loading it reports the typo
    instead of silently falling back to another file.
    """
    if env.get("NMC_CONFIG"):
        return _from_env(env["NMC_CONFIG"], home)
    etc = etc or etc_dir(env, home)
    candidates = (home / ".nmc" / "client.cfg", etc / "client.cfg", home / ".local/state/nmc/dev/client.cfg")
    return next((c for c in candidates if c.is_file()), None)


def find_server_config(env: Mapping[str, str], home: Path, *, etc: Path | None = None) -> Path | None:
    """The server.cfg to use: $NMC_SERVER_CONFIG (even if missing), then /etc/nmc ($NMC_ETC_DIR)."""
    if env.get("NMC_SERVER_CONFIG"):
        return _from_env(env["NMC_SERVER_CONFIG"], home)
    candidate = (etc or etc_dir(env, home)) / "server.cfg"
    return candidate if candidate.is_file() else None
