"""A real, secure fleet to attack: TLS broker with nmc's generated permissions, real daemons, real certificates.

`HostileFleet` is what `nmc dev up` runs, with more certificates of every role
issued *before* the broker's configuration is generated (so the broker admits
them, as it admits any certificate the fleet's CA issued):

| name | roles | what it stands for |
| --- | --- | --- |
| `admin` | user | the operator; the dev policy allows it everything |
| `mallory` | user | a valid user the policy denies everything |
| `node1..3.example.net` | node | the victims (real `Node`s in the test's loop) |
| `node9.example.net` | node | a compromised node: no daemon, the attacker holds its key |
| `nmc-policy` | service, policy | the policy service (running) |
| `nmc-audit` | service, audit | the audit service (running, writes `audit_file`) |
| `nmc-operator` | operator | the operator: creates the streams before the daemons start |
| `site1` | leaf | a site's leaf server certificate |
| `ann` | user, auditor | a reviewer: reads every caller's jobs |

Attacks use raw nats-py (`connect_as`) with one of these certificates; the daemons
run in the test's event loop exactly as `nmc dev up` runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from nmc.audit.position import PositionFile
from nmc.audit.service import AuditService
from nmc.authz.service import PolicyService
from nmc.client.fleet import FleetClient
from nmc.cli.common import client_session
from nmc.ops import pki
from nmc.ops.broker.server import Broker, BrokerSettings, free_port
from nmc.ops.broker.authorization import TrustSources, secure_broker_settings
from nmc.ops.config.files import Config, load_config
from nmc.ops.fleet.dev import DevLayout, node_facts_for, write_fleet
from nmc.ops.broker.jetstream import setup_as
from nmc.ops.daemon.serve import build_audit_service, build_node, build_policy_service
from nmc.security import Signer, Verifier
from nmc.security.names import inbox_prefix
from nmc.services.node import Node

NODES = 3
EXTRA = {"mallory": ("user",), "node9.example.net": ("node",), "site1": ("leaf",), "ann": ("user", "auditor")}


@dataclass
class HostileFleet:
    """Broker, policy and audit services and `NODES` nodes, all secured as in production; see the module doc."""

    root: Path
    node_cfg: dict[str, str] = field(default_factory=dict)
    node_count: int = NODES
    broker: Broker | None = None
    nodes: list[Node] = field(default_factory=list)
    policy: PolicyService | None = None
    audit: AuditService | None = None
    _connections: list[NATS] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layout = DevLayout(self.root)
        self.port = free_port()
        self.url = f"tls://127.0.0.1:{self.port}"
        self.server_cfgs = write_fleet(self.layout, self.node_count, self.url)
        for cfg in self.server_cfgs:
            with cfg.open("a", encoding="utf-8") as out:
                out.writelines(f"{k} = {v}\n" for k, v in self.node_cfg.items())
        for name, roles in EXTRA.items():
            if name not in self.identities:  # a fleet of 9 or more has its own node9
                pki.issue(self.layout.ca_dir, name, roles=roles, force=True)
        settings, _ = secure_broker_settings(
            BrokerSettings(port=self.port, store_dir=self.root / "broker" / "jetstream", server_name="hostile"),
            TrustSources(ca_dir=self.layout.ca_dir))
        self.broker = Broker(settings, self.root / "broker")

    # -- what the tests use -------------------------------------------------------------------

    @property
    def identities(self) -> list[str]:
        """The running nodes' identities."""
        return [node_facts_for(i)[0] for i in range(1, self.node_count + 1)]

    @property
    def audit_file(self) -> Path:
        """The audit trail the audit service writes (JSON lines)."""
        return self.layout.audit_dir / "audit.jsonl"

    def tls(self, name: str) -> ssl.SSLContext:
        """Mutual TLS as certificate `name`."""
        paths = pki.issued_paths(self.layout.ca_dir, name)
        ctx = ssl.create_default_context(cafile=str(self.layout.ca_dir / "ca.pem"))
        ctx.load_cert_chain(str(paths.certificate), str(paths.key))
        return ctx

    def signer(self, name: str) -> Signer:
        """Signs as certificate `name`."""
        paths = pki.issued_paths(self.layout.ca_dir, name)
        return Signer.from_pem(paths.certificate.read_bytes(), paths.key.read_bytes())

    def verifier(self) -> Verifier:
        """Trusts the fleet CA."""
        return Verifier.from_pem((self.layout.ca_dir / "ca.pem").read_bytes())

    async def connect_as(self, name: str, *, errors: list[str] | None = None, **options: Any) -> NATS:
        """A raw nats-py connection with certificate `name` (and the inbox the broker gives it).

        Asynchronous server errors (permission violations) are appended to `errors`.
        """
        async def on_error(exc: Exception) -> None:
            if errors is not None:
                errors.append(str(exc))

        nc = await nats.connect(self.url, tls=self.tls(name), inbox_prefix=inbox_prefix(name),
                                error_cb=on_error, allow_reconnect=False, connect_timeout=5, **options)
        self._connections.append(nc)
        return nc

    def client_config(self, name: str = "admin") -> Config:
        """A client config signing as `name`."""
        paths = pki.issued_paths(self.layout.ca_dir, name)
        path = self.root / f"client-{name}.cfg"
        path.write_text(f"main_collective = nmc\nplugin.nats.servers = {self.url}\n"
                        f"plugin.security.ca_file = {self.layout.ca_dir / 'ca.pem'}\n"
                        f"plugin.security.cert_file = {paths.certificate}\n"
                        f"plugin.security.key_file = {paths.key}\n", encoding="utf-8")
        return load_config(path, kind="client", env={})

    @contextlib.asynccontextmanager
    async def client(self, name: str = "admin", **kw: Any) -> AsyncIterator[FleetClient]:
        """The real client library, signing as `name` (timeouts: `timeout=`, `discovery_timeout=`)."""
        async with client_session(self.client_config(name), **kw) as fc:
            yield fc

    def audit_records(self) -> list[dict[str, Any]]:
        """What the audit service wrote so far."""
        if not self.audit_file.exists():
            return []
        return [json.loads(line) for line in self.audit_file.read_text().splitlines() if line.strip()]

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> HostileFleet:
        """Broker, the operator's stream setup, audit and policy services, then every node (connected, subscribed)."""
        assert self.broker is not None
        await asyncio.to_thread(self.broker.start)
        # The operator's step, as `nmc dev up` runs it: no daemon may create or change a stream.
        await setup_as(load_config(self.layout.operator_cfg, kind="client", env={}))
        self.audit = build_audit_service(load_config(self.layout.audit_cfg, kind="server", env={}))
        await self.audit.start()
        self.policy = build_policy_service(load_config(self.layout.policy_cfg, kind="server", env={}))
        await self.policy.start()
        for cfg in self.server_cfgs:
            node = await build_node(load_config(cfg, kind="server", env={}))
            await node.start()
            self.nodes.append(node)
        return self

    async def restart_node(self, identity: str) -> Node:
        """Stop the running node `identity` and start it again from its server.cfg (same spool, fresh memory)."""
        index = next(i for i, node in enumerate(self.nodes) if node.identity == identity)
        await self.nodes[index].stop()
        node = await build_node(load_config(self.server_cfgs[index], kind="server", env={}))
        await node.start()
        self.nodes[index] = node
        return node

    async def audit_consumed(self, stream_seq: int, within: float = 15.0) -> None:
        """Wait until the audit service has handled every stream message up to `stream_seq` (and saved that).

        The service handles the stream in order, so after this whatever it would do with the
        message at `stream_seq` is done: written, dropped or refused.
        """
        assert self.audit is not None
        audit = self.audit

        def handled() -> bool:
            saved = PositionFile(audit.settings.position_path).load()
            return (audit.position or 0) > stream_seq and saved is not None and saved.next_seq > stream_seq

        await until(handled, within, f"the audit service to handle stream message {stream_seq}")

    async def stop(self) -> None:
        """Everything, in reverse order; tolerant of what a test already stopped."""
        for nc in self._connections:
            with contextlib.suppress(Exception):
                await nc.close()
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)
        for service in (self.policy, self.audit):
            if service is not None:
                with contextlib.suppress(Exception):
                    await service.stop()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)


async def gather_replies(nc: NATS, subject: str, body: bytes, headers: dict[str, str], count: int,
                         within: float = 10.0, listen: NATS | None = None) -> list[Any]:
    """Publish one raw request on `nc` and return the first `count` replies.

    They are awaited on a fresh inbox of `listen` (default `nc`): nodes answer only into the
    inbox of the certificate that signed the request, which another connection may have to hear.
    """
    listen = listen or nc
    inbox = listen.new_inbox()
    sub = await listen.subscribe(inbox)
    await listen.flush()
    try:
        await nc.publish(subject, body, reply=inbox, headers=headers)
        replies = []
        deadline = time.monotonic() + within
        while len(replies) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {count} replies on {subject}, got {len(replies)}"
            replies.append(await sub.next_msg(timeout=remaining))
        return replies
    finally:
        await sub.unsubscribe()


async def until(check: Callable[[], Awaitable[bool] | bool], within: float, what: str) -> None:
    """Wait until `check()` is true (polled every 20 ms), failing the test with `what` after `within` s."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
