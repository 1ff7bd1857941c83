"""The one-command dev fleet: broker, throwaway CA, N nodes with varied facts, a client config.

Everything lives under one directory (default ~/.local/state/nmc/dev), which
is also the last place `nmc` looks for a client.cfg, so `nmc ping` in a second
shell just works while the fleet runs.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from nmc.errors import OpsError
from nmc.ops import pki
from nmc.ops.broker.server import Broker, BrokerSettings, free_port
from nmc.ops.broker.authorization import TrustSources, secure_broker_settings
from nmc.ops.config.files import Config, load_config
from nmc.protocol.unsigned import UNSIGNED_CALLER

if TYPE_CHECKING:  # loaded only when the fleet serves metrics: the simulator writes fleets without them
    from nmc.transport.metrics import MetricsEndpoint

__all__ = ["CONSOLE_NAME", "DevFleet", "DevLayout", "FleetBusyError", "FleetLock", "OPERATOR_NAME", "ensure_ca", "ensure_certificate", "default_dev_dir", "node_facts_for", "write_fleet"]

_COUNTRIES = ("us", "de", "uk", "us", "fr")
_ROLES = ("web", "web", "db", "db", "cache")
_OSES: tuple[dict[str, Any], ...] = (
    {"family": "Debian", "name": "Debian", "release": {"full": "12", "major": "12"}},
    {"family": "Debian", "name": "Ubuntu", "release": {"full": "22.04", "major": "22"}},
    {"family": "RedHat", "name": "Rocky", "release": {"full": "9.3", "major": "9"}},
)
CLIENT_NAME = "admin"
DEFAULT_METRICS_PORT = 9464  # `nmc dev up`'s Prometheus endpoint (a free one when it is taken)
AUDIT_NAME = "nmc-audit"
POLICY_NAME = "nmc-policy"
# Role `operator`: the one certificate that may create and configure the fleet's streams (nmc.ops.broker.jetstream).
OPERATOR_NAME = "nmc-operator"
# Role `console`: the read-only web console (`nmc serve console`, docs/console.md) reads streams and runs nothing.
CONSOLE_NAME = "nmc-console"
# Written once: edits survive `nmc dev up` restarts, and the service reloads them while it runs.
DEFAULT_POLICY = f"""# written by `nmc dev up`: the dev client may run everything; nobody else anything.
# Add <agent>.policy files next to this one; see docs/authorization.md.
policy default deny
allow\tcert={CLIENT_NAME}\t*\t*
"""


def default_dev_dir() -> Path:
    """Where the dev fleet keeps its state (XDG state dir)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "nmc" / "dev"


def node_facts_for(i: int) -> tuple[str, dict[str, Any], list[str]]:
    """Identity, facts and classes of dev node number i (1-based): varied so filters have work to do."""
    role = _ROLES[(i - 1) % len(_ROLES)]
    os_facts = _OSES[(i - 1) % len(_OSES)]
    facts = {
        "country": _COUNTRIES[(i - 1) % len(_COUNTRIES)],
        "role": role,
        "dc": "east" if i % 2 else "west",
        "environment": "production" if i % 3 else "staging",
        "customer": "acme" if i % 4 else "globex",
        "os": os_facts,
        "osfamily": os_facts["family"],
        "operatingsystem": os_facts["name"],
        "operatingsystemrelease": os_facts["release"]["full"],
    }
    classes = [f"role::{role}", {"web": "nginx", "db": "postgresql", "cache": "memcached"}[role], "base"]
    return f"node{i}.example.net", facts, classes


@dataclass(frozen=True)
class DevLayout:
    """Paths of one dev fleet directory."""

    root: Path

    @property
    def ca_dir(self) -> Path:
        """The throwaway CA."""
        return self.root / "ca"

    @property
    def client_cfg(self) -> Path:
        """The client config `nmc` finds by default."""
        return self.root / "client.cfg"

    @property
    def operator_cfg(self) -> Path:
        """The operator's client config (`nmc --config ... audit setup`): certificate of role `operator`."""
        return self.root / "operator.cfg"

    @property
    def console_cfg(self) -> Path:
        """The web console's config (role `console`: reads the registry and the streams, runs nothing)."""
        return self.root / "console.cfg"

    @property
    def broker_dir(self) -> Path:
        """Broker config, log and JetStream store."""
        return self.root / "broker"

    def node_dir(self, identity: str) -> Path:
        """One node's server.cfg, facts and classes."""
        return self.root / "nodes" / identity

    @property
    def audit_dir(self) -> Path:
        """The audit service's config and the audit trail it writes (audit.jsonl)."""
        return self.root / "audit"

    @property
    def audit_cfg(self) -> Path:
        """The audit service's config."""
        return self.audit_dir / "audit.cfg"

    @property
    def policy_dir(self) -> Path:
        """The action-policy service's config and its policies/ directory."""
        return self.root / "policy"

    @property
    def policy_cfg(self) -> Path:
        """The action-policy service's config."""
        return self.policy_dir / "policy.cfg"


def _write_cfg(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# written by `nmc dev up`; throwaway, do not use in production"]
    lines += [f"{k} = {v}" for k, v in values.items() if v != ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_fleet(layout: DevLayout, nodes: int, url: str, collective: str = "nmc",
                node_overrides: Mapping[str, str] | None = None, puppet: bool = False,
                metrics_port: int = 0) -> list[Path]:
    """Create CA, certificates and configs for `nodes` nodes; returns the server.cfg paths.

    `node_overrides` replaces or adds server.cfg keys on every node (the simulator's
    `--authz` and `--audit` choices); a value of "" drops the key. `puppet` gives every
    node its own masterless Puppet site (see `_puppet_site`). `metrics_port` (0: none)
    is the `plugin.prometheus.port` of every node and of both services.
    """
    metrics = {"plugin.prometheus.port": str(metrics_port)} if metrics_port else {}
    ensure_ca(layout.ca_dir)
    ca = layout.ca_dir / "ca.pem"
    if not pki.crl_path(layout.ca_dir).exists():
        # Every config below names ca.pem, so every daemon and the client read this crl.pem beside it
        # (nmc.ops.config.settings.crl_path): `nmc ops ca revoke NAME --dir <dev>/ca` counts at once, no restart.
        pki.write_crl(layout.ca_dir)
    client = ensure_certificate(layout.ca_dir, CLIENT_NAME, ("user",))
    _write_cfg(layout.client_cfg, {
        "main_collective": collective, "plugin.nats.servers": url,
        "plugin.security.ca_file": str(ca), "plugin.security.cert_file": str(client.certificate),
        "plugin.security.key_file": str(client.key),
    })
    server_cfgs = []
    for i in range(1, nodes + 1):
        identity, facts, classes = node_facts_for(i)
        issued = ensure_certificate(layout.ca_dir, identity, ("node",))
        ndir = layout.node_dir(identity)
        ndir.mkdir(parents=True, exist_ok=True)
        (ndir / "facts.yaml").write_text(yaml.safe_dump(facts, sort_keys=True), encoding="utf-8")
        (ndir / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
        _write_cfg(ndir / "server.cfg", {
            "identity": identity, "main_collective": collective, "plugin.nats.servers": url,
            "plugin.security.ca_file": str(ca), "plugin.security.cert_file": str(issued.certificate),
            "plugin.security.key_file": str(issued.key), "plugin.yaml": "facts.yaml",
            "classesfile": "classes.txt",
            "audit.spool": "audit.spool",
            "security.replay_file": "replay.log",
            "authz.mode": "service", "authz.signers": POLICY_NAME,
        } | metrics | (_puppet_site(ndir, identity, facts["role"]) if puppet else {}) | dict(node_overrides or {}))
        server_cfgs.append(ndir / "server.cfg")
    _write_policy_service(layout, url, collective, ca, metrics)
    operator = ensure_certificate(layout.ca_dir, OPERATOR_NAME, ("operator",))
    _write_cfg(layout.operator_cfg, {
        "main_collective": collective, "plugin.nats.servers": url,
        "plugin.security.ca_file": str(ca), "plugin.security.cert_file": str(operator.certificate),
        "plugin.security.key_file": str(operator.key),
    })
    # Role `audit`: the broker lets it read NMC_AUDIT record by record and hear nmc.audit.> (nmc.security.permissions);
    # its position in the stream is kept beside its file (audit.jsonl.position).
    audit = ensure_certificate(layout.ca_dir, AUDIT_NAME, ("service", "audit"))
    _write_cfg(layout.audit_cfg, {"plugin.nats.servers": url, "audit.file": "audit.jsonl",
                                  "plugin.security.ca_file": str(ca), "plugin.security.cert_file": str(audit.certificate),
                                  "plugin.security.key_file": str(audit.key)} | metrics)
    console = ensure_certificate(layout.ca_dir, CONSOLE_NAME, ("console",))
    _write_cfg(layout.console_cfg, {
        "main_collective": collective, "plugin.nats.servers": url,
        "plugin.security.ca_file": str(ca), "plugin.security.cert_file": str(console.certificate),
        "plugin.security.key_file": str(console.key),
    })
    return server_cfgs


def ensure_ca(ca_dir: Path) -> bool:
    """Keep the fleet's CA when it is usable (True), else make a new one in an emptied directory (False).

    Every `nmc dev up` used to make a new CA while the broker's certificate from the first
    run stayed, and every TLS handshake then failed. Keeping a valid CA also keeps every
    certificate the user issued from it (`nmc ops ca issue mallory --dir .../ca`) working
    across restarts. A new CA starts from an empty directory: nothing of the old one is left
    to be mixed in (certificates, archive, CRL).
    """
    if pki.ca_problem(ca_dir) is None:
        return True
    shutil.rmtree(ca_dir, ignore_errors=True)
    pki.init_ca(ca_dir, common_name="nmc dev CA", force=True)
    return False


def ensure_certificate(ca_dir: Path, name: str, roles: tuple[str, ...]) -> pki.IssuedPaths:
    """The certificate `name` from the CA in `ca_dir`: reused when it is that CA's, valid and has `roles`."""
    if pki.issued_problem(ca_dir, name, roles=roles) is None:
        return pki.issued_paths(ca_dir, name)
    return pki.issue(ca_dir, name, roles=roles, force=True)


_PUPPET_DIRS = ("vardir", "confdir", "logdir", "rundir", "publicdir", "codedir")


def _puppet_site(ndir: Path, identity: str, role: str) -> dict[str, str]:
    """plugin.puppet.* for a masterless `puppet apply` of a one-resource manifest in the node's own dirs.

    Without it every dev node would run `puppet agent` against a Puppet server that is not
    there and share the machine's one statedir, so `nmc puppet runall` could not succeed.
    """
    site = ndir / "puppet"
    for name in _PUPPET_DIRS:
        (site / name).mkdir(parents=True, exist_ok=True)
    manifest = site / "site.pp"
    manifest.write_text(f"notify {{ 'nmc dev fleet: Puppet ran on {identity} ({role})': }}\n", encoding="utf-8")
    dirs = [arg for name in _PUPPET_DIRS for arg in (f"--{name}", str(site / name))]
    return {"plugin.puppet.command": shlex.join(["puppet", "apply", *dirs, str(manifest)]),
            "plugin.puppet.statedir": str(site / "vardir" / "state"),
            "plugin.puppet.summary": str(site / "publicdir" / "last_run_summary.yaml"),
            "plugin.puppet.pidfile": str(site / "rundir" / "agent.pid")}


def _write_policy_service(layout: DevLayout, url: str, collective: str, ca: Path,
                          extra: Mapping[str, str] | None = None) -> None:
    """The policy service's certificate and config, and a default policy that lets the dev client in."""
    # Role `policy` gives it the broker permissions of the policy service (nmc.ops.broker.authorization).
    issued = ensure_certificate(layout.ca_dir, POLICY_NAME, ("service", "policy"))
    policies = layout.policy_dir / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    if not (policies / "default.policy").exists():
        (policies / "default.policy").write_text(DEFAULT_POLICY, encoding="utf-8")
    _write_cfg(layout.policy_cfg, {
        "main_collective": collective, "plugin.nats.servers": url, "plugin.security.ca_file": str(ca),
        "plugin.security.cert_file": str(issued.certificate), "plugin.security.key_file": str(issued.key),
        "authz.policydir": "policies",
    } | dict(extra or {}))


class FleetBusyError(OpsError):
    """Another running `nmc dev up` holds this state directory."""

    def __init__(self, root: Path, pid: int | None) -> None:
        self.root, self.pid = root, pid
        who = f"pid {pid}" if pid else "another process"
        stop = f"`kill {pid}`" if pid else "Ctrl-C in its shell"
        super().__init__(f"a dev fleet is already running in {root} ({who}): stop it with Ctrl-C in its shell or "
                         f"{stop}, or start a second fleet in its own directory with --dir")


class FleetLock:
    """One state directory belongs to one running fleet: an exclusive flock on `<dir>/lock`.

    The kernel drops the lock when the process ends however it ends (SIGKILL included), so
    a stale lock file never blocks the next `nmc dev up`. Nothing in the directory is
    written before the lock is held: a second fleet never touches the first one's files.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file; it holds the running fleet's pid."""
        return self.root / "lock"

    def acquire(self) -> None:
        """Take the lock (FleetBusyError naming the holder's pid when another process has it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise FleetBusyError(self.root, int(holder) if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the directory up (the file stays; only the flock matters)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class DevFleet:
    """The broker process plus the node configs of a dev fleet (nodes run in the caller's loop)."""

    layout: DevLayout
    nodes: int = 5
    port: int = 4222
    unsigned_actions: tuple[str, ...] = ()  # security.unsigned_actions of every node (off by default)
    # The one metrics endpoint of the fleet's process (None: no metrics); see start_metrics.
    metrics_port: int | None = DEFAULT_METRICS_PORT
    metrics: MetricsEndpoint | None = None

    def start_metrics(self) -> MetricsEndpoint | None:
        """Listen for Prometheus on 127.0.0.1:metrics_port (a free port if it is taken or 0), or nothing when None.

        Every daemon of the fleet runs in this process, so all of them share this one endpoint
        (their configs name its port; nmc.transport.metrics.acquire): one URL, one scrape target,
        the nodes told apart by their `identity` label, however many nodes there are.
        """
        if self.metrics_port is None or self.metrics is not None:
            return self.metrics
        from nmc.transport.metrics import acquire

        try:
            self.metrics = acquire("127.0.0.1", self.metrics_port)
        except OSError:
            self.metrics = acquire("127.0.0.1", 0)
        return self.metrics

    def stop_metrics(self) -> None:
        """Give the endpoint up (it stops listening once every daemon gave it up too)."""
        if self.metrics is not None:
            from nmc.transport.metrics import release

            release(self.metrics)
            self.metrics = None

    def prepare(self) -> tuple[Broker, list[Config]]:
        """Write everything, start the metrics endpoint and the broker; returns it and the nodes' configs."""
        metrics = self.start_metrics()
        port = self.port if self.port and _port_free(self.port) else free_port()
        # The secure path is the default one: TLS, a certificate for every connection (verify_and_map)
        # and each certificate's permissions by role, rendered from the CA write_fleet makes.
        overrides = {"security.unsigned_actions": ", ".join(self.unsigned_actions)} if self.unsigned_actions else None
        cfgs = write_fleet(self.layout, self.nodes, f"tls://127.0.0.1:{port}", puppet=True, node_overrides=overrides,
                           metrics_port=metrics.port if metrics is not None else 0)
        if self.unsigned_actions:
            allow_unsigned(self.layout, self.unsigned_actions)
        settings, _ = secure_broker_settings(
            BrokerSettings(port=port, store_dir=self.layout.broker_dir / "jetstream", server_name="nmc-dev"),
            TrustSources(ca_dir=self.layout.ca_dir, policy_dir=self.layout.policy_dir / "policies"))
        broker = Broker(settings, self.layout.broker_dir)
        broker.start()
        return broker, [load_config(p, kind="server", env={}) for p in cfgs]

    def policy_config(self) -> Config:
        """The config of the fleet's action-policy service (written by prepare())."""
        return load_config(self.layout.policy_cfg, kind="server", env={})

    def audit_config(self) -> Config:
        """The config of the fleet's audit service (written by prepare())."""
        return load_config(self.layout.audit_cfg, kind="server", env={})

    def console_config(self) -> Config:
        """The web console's config (written by prepare())."""
        return load_config(self.layout.console_cfg, kind="client", env={})

    def operator_config(self) -> Config:
        """The operator's config, whose certificate creates the streams (written by prepare())."""
        return load_config(self.layout.operator_cfg, kind="client", env={})


def allow_unsigned(layout: DevLayout, actions: tuple[str, ...]) -> None:
    """Let caller unsigned=nats run `actions` (agent.action) in the dev policy, once.

    Asking `nmc dev up --unsigned-actions` is the explicit consent for both gates
    (the nodes' allowlist and the policy); the line is appended to default.policy so the
    operator sees it, can delete it, and later starts do not add it again.
    """
    policy = layout.policy_dir / "policies" / "default.policy"
    names = " ".join(sorted({name.split(".", 1)[1] for name in actions if "." in name}))
    line = f"allow\t{UNSIGNED_CALLER}\t{names}\t*"
    text = policy.read_text(encoding="utf-8") if policy.exists() else DEFAULT_POLICY
    if line not in text.splitlines():
        comment = "# added by `nmc dev up --unsigned-actions`: read-only queries without a signature (nats req)"
        policy.write_text(text.rstrip("\n") + f"\n{comment}\n{line}\n", encoding="utf-8")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        # As nats-server binds: the previous fleet's connections in TIME_WAIT do not make the port "taken".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
