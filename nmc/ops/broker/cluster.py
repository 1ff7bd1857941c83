"""Beyond one machine: NATS clusters (routes, clustered JetStream) and leaf nodes for sites.

A *cluster* is several nats-servers joined by routes: a client (or node) on
any of them reaches every subscriber on all of them, and JetStream keeps each
stream on ``replicas`` servers, so NMC_AUDIT and the registry survive the loss
of one server when they have 3 replicas (``plugin.nats.jetstream_replicas``).
Clustered JetStream needs a cluster name and a unique ``server_name`` per
server (each with its own store).

A *leaf node* is a site's own nats-server that connects out to a hub (a
server or cluster). Site nodes and users talk to the leaf; the leaf forwards
what the hub's permissions for its connection allow. The leaf runs without
JetStream: its clients use the hub's JetStream (audit stream, registry)
through the leaf connection.

With TLS (nmc's secure default) route and leaf connections use certificates
from the fleet CA too: routes require a certificate of role ``broker``
(``pinned_certs`` lists exactly those keys, so a node's or user's certificate
cannot pose as a server); a leaf connection presents a certificate of role
``leaf``, which the hub maps (``verify_and_map``) to a user with the site
permissions of ``nmc.ops.broker.authorization.leaf_permissions``.

The block renderers and ``plan_local_cluster`` are pure (with TLS,
``secure_peers`` reads the broker's own certificate for its pin);
``LocalCluster`` runs the servers of one machine (``nmc ops broker --cluster N``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from nmc.ops.broker.server import Broker, BrokerError, BrokerSettings
from nmc.ops.broker.authorization import LEAF_ROLE, Authorization, spki_pin
from nmc.security import SecurityError, load_certificates_pem

__all__ = [
    "DEFAULT_CLUSTER_NAME",
    "DEFAULT_HUB_DOMAIN",
    "ClusterSpec",
    "LeafHub",
    "LeafRemote",
    "LocalCluster",
    "PeerTLS",
    "free_ports",
    "health",
    "plan_local_cluster",
    "render_cluster",
    "render_leaf_hub",
    "render_leaf_remote",
    "route_url",
    "secure_peers",
    "with_blocks",
]

DEFAULT_CLUSTER_NAME = "nmc"
DEFAULT_HUB_DOMAIN = "hub"
_HEALTH_POLL = 0.1


def _quote(value: str | Path) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _hostport(host: str, port: int) -> str:
    shown = -1 if port == 0 else port
    return f"[{host}]:{shown}" if ":" in host else f"{host}:{shown}"


def _check_name(what: str, name: str) -> None:
    if not name or any(c.isspace() or c in "\"'.*>" for c in name):
        raise BrokerError(f"{what} must be a non-empty word without spaces, quotes, '.', '*' or '>', got {name!r}")


def route_url(host: str, port: int) -> str:
    """The URL other servers dial to route to a server whose cluster port is `port` on `host`."""
    return f"nats-route://{_hostport(host, port)}"


@dataclass(frozen=True)
class PeerTLS:
    """TLS between servers: this server's certificate, the CA, and the peer keys admitted (``pinned_certs``)."""

    cert: Path
    key: Path
    ca: Path
    pinned: tuple[str, ...] = ()  # hex SHA-256 of admitted peers' SubjectPublicKeyInfo; empty: any cert of the CA

    def render(self, indent: str, *, verify: str | None) -> list[str]:
        """A ``tls { ... }`` block; `verify` is "verify", "verify_and_map" or None (a dialling side)."""
        lines = [f"{indent}tls {{", f"{indent}  cert_file: {_quote(self.cert)}", f"{indent}  key_file: {_quote(self.key)}",
                 f"{indent}  ca_file: {_quote(self.ca)}"]
        if verify is not None:
            lines.append(f"{indent}  {verify}: true")
        if self.pinned and verify is not None:
            lines.append(f"{indent}  pinned_certs: [")
            lines += [f'{indent}    "{pin}"' for pin in self.pinned]
            lines.append(f"{indent}  ]")
        lines.append(f"{indent}}}")
        return lines


@dataclass(frozen=True)
class ClusterSpec:
    """One server's ``cluster`` block: the cluster's name, where it listens for routes, whom it dials."""

    name: str
    host: str
    port: int
    routes: tuple[str, ...] = ()  # nats-route:// URLs of the other servers (its own is harmless: skipped)
    tls: PeerTLS | None = None

    def __post_init__(self) -> None:
        """Refuse names nats-server refuses, and routes that are no route URLs."""
        _check_name("cluster name", self.name)
        if not 0 <= self.port <= 65535:
            raise BrokerError(f"cluster port must be between 0 and 65535, got {self.port}")
        for url in self.routes:
            if not url.startswith(("nats-route://", "nats://", "tls://")) or not url.split("://", 1)[1]:
                raise BrokerError(f"route {url!r} is not a URL like nats-route://host:6222")


@dataclass(frozen=True)
class LeafHub:
    """The hub side: accept leaf connections (from sites) on ``host:port``."""

    host: str
    port: int
    tls: PeerTLS | None = None  # with TLS: verify_and_map, the leaf certificate names its user
    domain: str = DEFAULT_HUB_DOMAIN  # the hub's JetStream domain (leaf servers reach JetStream through it)


@dataclass(frozen=True)
class LeafRemote:
    """The site side: connect out to the hub's leaf port (one or several URLs of the same hub)."""

    urls: tuple[str, ...]
    tls: PeerTLS | None = None  # this leaf server's client certificate (role leaf)
    hub_domain: str = DEFAULT_HUB_DOMAIN  # the hub's JetStream domain

    def __post_init__(self) -> None:
        """At least one URL, each naming a scheme the leaf connection understands."""
        if not self.urls:
            raise BrokerError("a leaf server needs the URL of its hub (--leaf-of nats-leaf://hub:7422)")
        for url in self.urls:
            if not url.startswith(("nats-leaf://", "nats://", "tls://")) or not url.split("://", 1)[1]:
                raise BrokerError(f"hub URL {url!r} is not a URL like nats-leaf://hub:7422 or tls://hub:7422")


def render_cluster(spec: ClusterSpec) -> str:
    """The ``cluster { ... }`` block for `spec` (pure)."""
    lines = ["cluster {", f"  name: {_quote(spec.name)}", f"  listen: {_quote(_hostport(spec.host, spec.port))}"]
    if spec.routes:
        lines.append("  routes: [")
        lines += [f"    {_quote(url)}" for url in spec.routes]
        lines.append("  ]")
    if spec.tls is not None:
        # Routes are servers vouching for each other: only broker certificates (pinned) may form one.
        lines += spec.tls.render("  ", verify="verify")
    lines.append("}")
    return "\n".join(lines)


def render_leaf_hub(hub: LeafHub) -> str:
    """The hub's ``leafnodes { listen ... }`` block (pure)."""
    lines = ["leafnodes {", f"  listen: {_quote(_hostport(hub.host, hub.port))}"]
    if hub.tls is not None:
        # verify_and_map: the leaf's certificate names a user of the main authorization block,
        # whose permissions bound what the site may send in and receive.
        lines += hub.tls.render("  ", verify="verify_and_map")
    lines.append("}")
    return "\n".join(lines)


def render_leaf_remote(remote: LeafRemote) -> str:
    """A site server's ``leafnodes { remotes [...] }`` block and the JetStream mapping (pure).

    nats-server does not forward the plain ``$JS.API`` across a leaf connection (both
    sides could have a JetStream); mapping it to the hub's domain lets the site's nodes
    and users use the hub's JetStream (audit stream) unchanged. Key-value puts
    (``$KV.<bucket>.<key>``, the registry) do not cross a leaf either; the hub takes them
    under its domain's API prefix (``$JS.<domain>.API.$KV.>``), which is what nats.go
    does for a KV in another domain, so they are mapped there too.
    """
    domain = remote.hub_domain
    lines = ["mappings {", f'  "$JS.API.>": "$JS.{domain}.API.>"', f'  "$KV.>": "$JS.{domain}.API.$KV.>"', "}", "",
             "leafnodes {", "  remotes: [", "    {", "      urls: ["]
    lines += [f"        {_quote(url)}" for url in remote.urls]
    lines.append("      ]")
    if remote.tls is not None:
        lines += remote.tls.render("      ", verify=None)
    lines += ["    }", "  ]", "}"]
    return "\n".join(lines)


def with_blocks(settings: BrokerSettings, *blocks: str) -> BrokerSettings:
    """`settings` with cluster/leaf blocks appended to its raw ``extra`` configuration."""
    extra = "\n\n".join(b.strip() for b in (settings.extra, *blocks) if b.strip())
    return replace(settings, extra=extra)


def _route_host(url: str) -> str:
    hostport = url.split("://", 1)[1].rsplit("@", 1)[-1]
    if hostport.startswith("["):
        return hostport[1:].split("]", 1)[0]
    return hostport.rsplit(":", 1)[0] if ":" in hostport else hostport


def secure_peers(settings: BrokerSettings, auth: Authorization | None, *, cluster: ClusterSpec | None = None,
                 hub: LeafHub | None = None, remote: LeafRemote | None = None) -> BrokerSettings:
    """`settings` with the cluster and leaf blocks; with TLS on, their connections use the broker's certificate.

    Routes admit the broker certificates named like the route hosts (a server's certificate
    carries its host name, or TLS to it would fail) and the server's own; the leaf port
    admits certificates of role ``leaf`` and maps each to its user (site permissions).
    """
    if hub is not None and remote is not None:
        raise BrokerError("a server is either a hub (accepts leaf connections) or a site's leaf, not both")
    blocks = []
    tls: PeerTLS | None = None
    own: set[str] = set()
    if settings.tls and auth is not None:
        assert settings.tls_cert is not None and settings.tls_key is not None and settings.tls_ca is not None
        try:
            own = {spki_pin(c) for c in load_certificates_pem(settings.tls_cert.read_bytes())}
        except (OSError, SecurityError) as exc:
            raise BrokerError(f"cannot read {settings.tls_cert}: {getattr(exc, 'reason', None) or exc}") from None
        tls = PeerTLS(cert=settings.tls_cert, key=settings.tls_key, ca=settings.tls_ca)
    if cluster is not None:
        if tls is not None and auth is not None:
            pins = tuple(sorted({*auth.broker_pins(_route_host(u) for u in cluster.routes), *own}))
            cluster = replace(cluster, tls=replace(tls, pinned=pins))
        blocks.append(render_cluster(cluster))
    if hub is not None:
        if tls is not None and auth is not None:
            leafs = auth.role_pins(LEAF_ROLE)
            if not leafs:
                raise BrokerError("no certificate of role leaf in the CA: issue one per site "
                                  "(nmc ops ca issue SITE-LEAF --server --role broker --role leaf) before the hub's config")
            hub = replace(hub, tls=replace(tls, pinned=leafs))
        blocks.append(render_leaf_hub(hub))
        if settings.store_dir is None:
            raise BrokerError("a hub needs JetStream (a store directory): its sites' nodes keep their audit records there")
        settings = replace(settings, jetstream_domain=hub.domain)
    if remote is not None:
        if tls is not None:
            remote = replace(remote, tls=tls)
        # A site's leaf keeps no JetStream of its own: its clients use the hub's, through the mapping.
        settings = replace(settings, store_dir=None, jetstream_domain="")
        blocks.append(render_leaf_remote(remote))
    return with_blocks(settings, *blocks)


def plan_local_cluster(base: BrokerSettings, count: int, *, root: Path, name: str = DEFAULT_CLUSTER_NAME,
                       client_ports: Sequence[int], route_ports: Sequence[int],
                       http_ports: Sequence[int | None] | None = None,
                       auth: Authorization | None = None) -> list[BrokerSettings]:
    """Settings of `count` servers of one cluster (pure): ``<name>-<i>`` each with its own store under `root`.

    Every server lists every route (its own included, which nats-server skips), so any
    one of them may start first and the others find it. With TLS settings (and their
    `auth`), routes use TLS with the broker's certificate, which all of them share.
    """
    if count < 1:
        raise BrokerError(f"a cluster needs at least one server, got {count}")
    if len(client_ports) != count or len(route_ports) != count:
        raise BrokerError("one client port and one route port per server are needed")
    if count > 1 and (0 in client_ports or 0 in route_ports):
        raise BrokerError("cluster servers need known ports (pick them up front, e.g. with free_port)")
    _check_name("cluster name", name)
    host = base.host if base.host not in ("0.0.0.0", "::") else "127.0.0.1"
    routes = tuple(route_url(host, port) for port in route_ports)
    planned = []
    for i in range(count):
        server = f"{name}-{i + 1}"
        spec = ClusterSpec(name=name, host=base.host, port=route_ports[i], routes=routes)
        settings = replace(base, port=client_ports[i], server_name=server,
                           store_dir=(root / server / "jetstream") if base.store_dir is not None else None,
                           http_port=http_ports[i] if http_ports is not None else base.http_port)
        planned.append(secure_peers(settings, auth, cluster=spec))
    return planned


class LocalCluster:
    """N nats-servers of one cluster on this machine (dev, tests): start, wait for JetStream, stop all."""

    def __init__(self, base: BrokerSettings, count: int, root: Path, *, name: str = DEFAULT_CLUSTER_NAME,
                 first_port: int = 0, first_route_port: int = 0, auth: Authorization | None = None) -> None:
        """Plan the servers; port 0 picks free ports, else ports count up from the given ones."""
        for first in (first_port, first_route_port):
            if first and first + count - 1 > 65535:
                raise BrokerError(f"ports {first}..{first + count - 1} do not fit below 65536")
        # Monitoring is on for every server: readiness of clustered JetStream is read from /healthz.
        free = iter(free_ports(_dial(base.host), 3 * count))
        http = [next(free) for _ in range(count)]

        def ports(first: int) -> list[int]:
            return [next(free) for _ in range(count)] if first == 0 else [first + i for i in range(count)]
        planned = plan_local_cluster(base, count, root=root, name=name, client_ports=ports(first_port),
                                     route_ports=ports(first_route_port), http_ports=http, auth=auth)
        self.root = root
        self.brokers = [Broker(s, root / s.server_name) for s in planned]

    @property
    def urls(self) -> list[str]:
        """The client URLs, one per server."""
        return [b.url for b in self.brokers]

    @property
    def servers_value(self) -> str:
        """The ``plugin.nats.servers`` value naming every server."""
        return ",".join(self.urls)

    def start(self, timeout: float = 30.0) -> None:
        """Start every server, then wait until JetStream is healthy on each (a meta leader is elected)."""
        try:
            for broker in self.brokers:
                broker.start()
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, timeout: float = 30.0, brokers: Sequence[Broker] | None = None) -> None:
        """Return once every running server's /healthz answers ok (JetStream current); BrokerError after `timeout`."""
        deadline = time.monotonic() + timeout
        for broker in brokers if brokers is not None else self.brokers:
            while True:
                status = health(broker)
                if status == "ok":
                    break
                if not broker.running:
                    raise BrokerError(f"{broker.settings.server_name} exited", log_lines=broker.log_lines())
                if time.monotonic() >= deadline:
                    raise BrokerError(f"JetStream of {broker.settings.server_name} not healthy after {timeout:g}s "
                                      f"({status})", log_lines=broker.log_lines(3))
                time.sleep(_HEALTH_POLL)

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL if one hangs)."""
        for broker in reversed(self.brokers):
            broker.stop()

    def __enter__(self) -> LocalCluster:
        """Start the cluster for a with block."""
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop every server."""
        self.stop()


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct TCP ports free on `host` a moment ago (all held open together, so none repeats)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(family, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _dial(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


def health(broker: Broker) -> str:
    """``ok`` when the server's JetStream is healthy, else what /healthz says (or why it could not be asked)."""
    if broker.monitor_url is None:
        return "no monitoring port"
    try:
        with urllib.request.urlopen(f"{broker.monitor_url}/healthz", timeout=2) as reply:
            body = json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return "ok" if body.get("status") == "ok" else str(body.get("error") or body)
