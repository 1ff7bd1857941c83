"""systemd units for the nmc daemons and an example /etc/nmc tree (`nmc ops systemd`).

Pure: functions take the values they need and return file names and texts;
the command in nmc/cli/systemd_cmd.py decides where they go. Nothing here
writes to /etc or /lib/systemd.

The three services get different treatment on purpose:

- ``nmc-node`` runs the puppet, package and service agents, which install
  packages, write anywhere a Puppet catalog says and restart services: they
  need root and setuid helpers (sudo in a catalog, package scripts). So the
  node unit is *not* sandboxed (no NoNewPrivileges, ProtectSystem,
  ProtectHome); what callers may do is limited by ActionPolicy instead.
- ``nmc-policy`` only reads its policy directory and talks to the broker,
  and ``nmc-audit`` only writes its audit file (and maybe syslog): both run
  as a dedicated user with the filesystem read-only except their log
  directory, no new privileges and no capabilities.

- ``nmc-console``, the read-only web console, is sandboxed the same way: it
  reads its config and certificate and talks to the broker and to browsers
  on loopback. It prints its URL with the access token at start, so the token
  is in the journal (``journalctl -u nmc-console``) for whoever may read it.

SIGHUP: the node re-collects facts, the policy service re-reads its
policies; the audit service and the console have no SIGHUP handler (the
audit service rotates its own file), so their units have no ExecReload — a
HUP would stop them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nmc import __version__

__all__ = [
    "EXAMPLE_AUDIT_NAME",
    "EXAMPLE_CONSOLE_NAME",
    "EXAMPLE_POLICY_NAME",
    "ROLES",
    "SystemdOptions",
    "etc_tree",
    "home_directory_warning",
    "installed_nmc",
    "render_unit",
    "render_units",
    "unit_name",
]

ROLES = ("node", "policy", "audit", "console")
EXAMPLE_POLICY_NAME = "nmc-policy"
EXAMPLE_AUDIT_NAME = "nmc-audit"
EXAMPLE_CONSOLE_NAME = "nmc-console"
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_IDENTITY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_HOME_PREFIXES = ("/home/", "/root/", "/run/user/")


@dataclass(frozen=True)
class SystemdOptions:
    """What the units and the example tree are written for; validates itself."""

    exec_start: tuple[str, ...]  # the nmc command: ("/usr/local/bin/nmc",) or (python, "-m", "nmc")
    etc: PurePosixPath = PurePosixPath("/etc/nmc")
    user: str = "nmc"
    identity: str = "web1.example.com"
    servers: str = "tls://nats.example.com:4222"

    def __post_init__(self) -> None:
        if not self.exec_start or not PurePosixPath(self.exec_start[0]).is_absolute():
            raise ValueError(f"the nmc command must be an absolute path, got {' '.join(self.exec_start)!r}")
        if not self.etc.is_absolute():
            raise ValueError(f"--etc must be an absolute path, got {str(self.etc)!r}")
        if not _USER.match(self.user) or self.user == "root":
            raise ValueError(f"--user must be a system user name other than root, got {self.user!r}")
        if not _IDENTITY.match(self.identity):
            raise ValueError(f"--identity must be a host name, got {self.identity!r}")
        if not self.servers.strip() or any(c.isspace() for c in self.servers):
            raise ValueError(f"--servers must be comma-separated broker URLs, got {self.servers!r}")


def installed_nmc(executable: str, which: Callable[[str], str | None],
                  is_file: Callable[[Path], bool] = lambda p: p.is_file() and os.access(p, os.X_OK)
                  ) -> tuple[str, ...]:
    """The `nmc` that is actually installed, as an absolute command.

    The script next to the running interpreter first (the venv or prefix this
    nmc lives in), then `nmc` on PATH, else `<python> -m nmc` — so the unit
    starts the same installation that wrote it.
    """
    beside = Path(executable).parent / "nmc"
    if is_file(beside):
        return (str(beside.absolute()),)
    found = which("nmc")
    if found and Path(found).is_absolute():
        return (found,)
    return (str(Path(executable).absolute()), "-m", "nmc")


def home_directory_warning(options: SystemdOptions) -> str | None:
    """A warning when ProtectHome=yes would hide the nmc command from the policy and audit services."""
    if options.exec_start[0].startswith(_HOME_PREFIXES):
        return (f"{options.exec_start[0]} is under a home directory: ProtectHome=yes hides it from nmc-policy "
                "and nmc-audit; install nmc outside /home and /root (or pass --exec)")
    return None


def unit_name(role: str) -> str:
    """The unit file name of one role: nmc-node.service, nmc-policy.service, nmc-audit.service, nmc-console.service."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return f"nmc-{role}.service"


def _exec_word(word: str) -> str:
    """One ExecStart word: systemd specifiers (%) and variables ($) escaped, quoted if it has spaces."""
    word = word.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


_CONFIG = {"node": "server.cfg", "policy": "policy.cfg", "audit": "audit.cfg", "console": "console.cfg"}
_DESCRIPTION = {
    "node": "nmc node daemon (nmc-node: answers requests for this machine)",
    "policy": "nmc action-policy service (nmc-policy: authorizes requests for the nodes)",
    "audit": "nmc audit service (nmc-audit: writes the fleet's audit trail)",
    "console": "nmc web console (nmc-console: read-only pages of the fleet on 127.0.0.1:8470)",
}

# For the services that need nothing but the network, their own files and the broker.
_SANDBOX = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "CapabilityBoundingSet=",
    "UMask=0027",
)

_NODE_NOTE = (
    "# Deliberately not sandboxed: the puppet, package and service agents install packages,",
    "# apply Puppet catalogs and restart services as root, which NoNewPrivileges=, ProtectSystem=",
    "# and ProtectHome= would break. Limit what callers may do here with authz.mode = service",
    "# (ActionPolicy, /etc/nmc/policies) instead; see docs/install.md.",
)


def _service_lines(role: str, options: SystemdOptions) -> list[str]:
    command = [*options.exec_start, "serve", role, "--config", str(options.etc / _CONFIG[role])]
    lines = ["Type=exec"]
    if role != "node":
        lines += [f"User={options.user}", f"Group={options.user}"]
    lines.append("ExecStart=" + " ".join(_exec_word(w) for w in command))
    if role in ("node", "policy"):
        what = "re-collects facts and classes" if role == "node" else "re-reads the policies"
        lines += [f"# SIGHUP {what} at once (systemctl reload nmc-{role}).", "ExecReload=/bin/kill -HUP $MAINPID"]
    lines += ["Restart=on-failure", "RestartSec=5s", "KillSignal=SIGTERM"]
    if role == "node":
        # SIGTERM lets running actions finish (agent_timeout, 60 s by default) before the node stops.
        lines += ["TimeoutStopSec=90s", "# The audit spool lives in /var/lib/nmc/audit (audit.spool).",
                  "StateDirectory=nmc", *_NODE_NOTE]
        return lines
    lines += ["# Sandbox: this service only reads /etc/nmc and talks to the broker."]
    lines += list(_SANDBOX)
    if role in ("policy", "console"):
        lines.append("PrivateDevices=yes")
    if role == "console":
        lines += ["# It prints its URL with a new access token at every start: journalctl -u nmc-console",
                  "# shows it to whoever may read this unit's journal. docs/console.md."]
    if role == "audit":
        # No PrivateDevices=: audit.syslog = unix:///dev/log needs the host's /dev/log.
        lines += ["# audit.file and its position file (audit.jsonl.position) live here; the service rotates the",
                  "# file itself, so no logrotate and no SIGHUP.",
                  "LogsDirectory=nmc", "LogsDirectoryMode=0750", "ReadWritePaths=/var/log/nmc"]
    return lines


def render_unit(role: str, options: SystemdOptions) -> str:
    """The text of one unit file (`role` is node, policy, audit or console)."""
    name = unit_name(role)
    lines = [
        f"# {name}: written by `nmc ops systemd` (nmc {__version__}).",
        f"# Install: cp {name} /etc/systemd/system/ && systemctl daemon-reload && systemctl enable --now nmc-{role}",
        "[Unit]",
        f"Description={_DESCRIPTION[role]}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        *_service_lines(role, options),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def render_units(options: SystemdOptions) -> dict[str, str]:
    """Every unit file, by file name."""
    return {unit_name(role): render_unit(role, options) for role in ROLES}


def _cfg(header: str, values: Mapping[str, str]) -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"{key} = {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def etc_tree(options: SystemdOptions) -> dict[str, str]:
    """An example /etc/nmc tree, by path relative to it: configs, plugin.d, policies, ssl/README.

    Every key is a known key of the file's kind (`nmc config keys`); the broker
    URLs sit in plugin.d/nats.cfg, which every config in the directory reads.
    """
    etc, ssl, node = options.etc, options.etc / "ssl", options.identity

    def security(name: str) -> dict[str, str]:
        return {"plugin.security.ca_file": str(ssl / "ca.pem"),
                "plugin.security.cert_file": str(ssl / f"{name}.pem"),
                "plugin.security.key_file": str(ssl / f"{name}.key"),
                "plugin.security.crl_file": str(ssl / "crl.pem")}

    tree: dict[str, str] = {}
    tree["server.cfg"] = _cfg(
        f"The node daemon: nmc serve node --config {etc / 'server.cfg'} (unit nmc-node.service).\n"
        "The certificate name must equal the identity (role node): nmc ops ca issue <identity> --role node.\n"
        "Broker URLs: plugin.d/nats.cfg. All keys: nmc config keys.\n"
        "With Puppet (a missing classes file stops the node, so only then):\n"
        "classesfile = /opt/puppetlabs/puppet/cache/state/classes.txt",
        {"identity": node, **security(node),
         "plugin.yaml": str(etc / "facts.yaml"),
         "factsource": "builtin,yaml",
         "authz.mode": "service", "authz.signers": EXAMPLE_POLICY_NAME,
         "audit.enabled": "true",
         "plugindir": str(etc / "agents")})
    tree["facts.yaml"] = (
        "# This node's own facts (plugin.yaml), on top of the built-in ones (os, hostname, ...).\n"
        "# Filters select nodes by them: nmc find -F role=web. Changes apply on systemctl reload nmc-node.\n"
        "role: web\nenvironment: production\n")
    tree["client.cfg"] = _cfg(
        "Used by `nmc` for every user of this machine (after $NMC_CONFIG and ~/.nmc/client.cfg).\n"
        "Each user has a certificate of their own (role user): nmc ops ca issue alice --role user;\n"
        "it is looked up in the user's home directory.",
        {"plugin.security.ca_file": str(ssl / "ca.pem"),
         "plugin.security.cert_file": "~/.nmc/ssl/cert.pem",
         "plugin.security.key_file": "~/.nmc/ssl/key.pem",
         "plugin.security.crl_file": str(ssl / "crl.pem"),
         "plugindir": str(etc / "agents"),
         "timeout": "10"})
    tree["policy.cfg"] = _cfg(
        f"The action-policy service: nmc serve policy --config {etc / 'policy.cfg'} (unit nmc-policy.service).\n"
        f"Its certificate (role policy): nmc ops ca issue {EXAMPLE_POLICY_NAME} --role service --role policy;\n"
        "nodes trust its answers through authz.signers.",
        {**security(EXAMPLE_POLICY_NAME), "authz.policydir": str(etc / "policies")})
    tree["audit.cfg"] = _cfg(
        f"The audit service: nmc serve audit --config {etc / 'audit.cfg'} (unit nmc-audit.service).\n"
        f"Its certificate (role audit): nmc ops ca issue {EXAMPLE_AUDIT_NAME} --role service --role audit.",
        {**security(EXAMPLE_AUDIT_NAME), "audit.file": "/var/log/nmc/audit.jsonl", "audit.format": "json",
         "audit.max_age": "90d"})
    tree["console.cfg"] = _cfg(
        f"The read-only web console: nmc serve console --config {etc / 'console.cfg'} (unit nmc-console.service).\n"
        f"Its certificate (role console: reads, runs nothing): nmc ops ca issue {EXAMPLE_CONSOLE_NAME} --role console.\n"
        "It listens on 127.0.0.1:8470 (--bind, --port in ExecStart) and prints its URL with the token: docs/console.md.\n"
        "HTTPS where people's client certificates (role user or auditor) open it (docs/console.md#access):\n"
        f"plugin.console.tls_cert = {ssl / 'console-web.pem'}\n"
        f"plugin.console.tls_key = {ssl / 'console-web.key'}\n"
        "plugin.console.allow_certs = alice,bob",
        security(EXAMPLE_CONSOLE_NAME))
    tree["plugin.d/nats.cfg"] = _cfg(
        "Read by every config in this directory as plugin.nats.<key>: one place for the broker URLs.\n"
        "tls:// with no plugin.nats.tls_* keys: the plugin.security.* certificate is the TLS client certificate.",
        {"servers": options.servers})
    tree["plugin.d/puppet.cfg"] = _cfg(
        "The puppet agent's settings, as plugin.puppet.<key> (nodes only; docs/puppet.md). Uncomment to change.\n"
        "command = puppet agent --onetime --no-daemonize --verbose\n"
        "splaylimit = 30", {})
    tree["policies/default.policy"] = (
        "# Rules for every agent without an <agent>.policy of its own (docs/authorization.md).\n"
        f"# The first matching rule decides; none matches: the default. Check: nmc policy lint {etc / 'policies'}\n"
        "policy default deny\n"
        "allow\tcert=admin\t*\t*\n")
    tree["policies/rpcutil.policy"] = (
        "# rpcutil only reports a node's own state (ping, facts, inventory): every certificate of the fleet.\n"
        "policy default deny\n"
        "allow\t*\t*\t*\n")
    tree["agents/README"] = (
        f"{etc / 'agents'}: agent plugins (*.py), the plugindir of server.cfg and client.cfg.\n"
        "Nodes run them; clients read their DDLs. Put the same file on both (docs/agents.md).\n")
    tree["ssl/README"] = (
        f"{ssl}: the certificates of this machine's nmc processes (made by nmc ops ca issue).\n\n"
        "  ca.pem                the fleet CA certificate (everyone)\n"
        "  crl.pem               the CA's revocation list (nmc ops ca crl; refresh it when you revoke)\n"
        f"  {node}.pem   this node's certificate, name = identity, role node\n"
        f"  {node}.key   its private key: root only (chmod 0600)\n"
        f"  {EXAMPLE_POLICY_NAME}.pem / .key   the policy service's (roles service, policy)\n"
        f"  {EXAMPLE_AUDIT_NAME}.pem / .key    the audit service's (roles service, audit)\n"
        f"  {EXAMPLE_CONSOLE_NAME}.pem / .key  the web console's (role console)\n\n"
        f"The policy and audit services and the console run as user {options.user}: their keys must be readable by it\n"
        f"(chown root:{options.user}, chmod 0640). Users keep their own certificate in ~/.nmc/ssl/.\n\n"
        "On the CA machine (nmc ops ca init --dir /srv/nmc-ca once):\n"
        f"  nmc ops ca issue {node} --role node --dir /srv/nmc-ca\n"
        f"  cp /srv/nmc-ca/ca.pem /srv/nmc-ca/certs/{node}.pem /srv/nmc-ca/private/{node}.key {ssl}/\n")
    return tree
