"""The broker's side of security, against nats-server configurations rendered by nmc's own code.

Every broker here runs with TLS, verify_and_map and the users and
permissions `nmc.ops.broker.authorization` renders from a CA directory made by
`nmc.ops.pki`; clients and nodes connect as the real code paths do
(`client_session`, `build_node` from a server.cfg).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from nmc.cli.common import client_session
from nmc.client.registry import read_registry
from nmc.ops import pki
from nmc.ops.broker.server import Broker, BrokerSettings
from nmc.ops.broker.authorization import Scope, TrustSources, secure_broker_settings
from nmc.ops.config.files import Config, load_config
from nmc.ops.broker.jetstream import setup_as
from nmc.ops.daemon.serve import build_node
from nmc.protocol.status import Status
from nmc.security import (
    certificate_pem,
    issue_certificate,
    load_certificate_pem,
    load_private_key_pem,
    private_key_pem,
)
from nmc.security.names import inbox_prefix
from nmc.services.agents import BUILTIN_AGENTS
from nmc.services.registry import RegistryPublisher

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def _logged(broker: Broker, text: str, timeout: float = 5.0) -> None:
    """Wait until the server's log says `text` (it may write the line after the client saw the refusal)."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in broker.log_lines(200)):
        assert time.monotonic() < deadline, f"{text!r} not in the broker log: {broker.log_lines(5)}"
        await asyncio.sleep(0.01)


def _secure(factory: Callable[..., Broker], sources: TrustSources, **overrides: Any) -> Broker:
    """A started broker with exactly the TLS/user settings secure_broker_settings renders."""
    secured, _ = secure_broker_settings(BrokerSettings(), sources, Scope())
    fields = {k: getattr(secured, k) for k in ("tls_cert", "tls_key", "tls_ca", "tls_map", "tls_pinned",
                                                "authorization")}
    return factory(**fields, **overrides)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    pki.init_ca(directory)
    for name, role in (("alice", "user"), ("bob", "user"), ("web1.example.com", "node"),
                       ("web2.example.com", "node")):
        pki.issue(directory, name, roles=(role,))
    return directory


def _tls(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def _as(ca_dir: Path, name: str) -> ssl.SSLContext:
    paths = pki.issued_paths(ca_dir, name)
    return _tls(ca_dir / "ca.pem", paths.certificate, paths.key)


class Errors:
    """nats-py's error_cb: the server's asynchronous -ERR lines, as the user sees them."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def cb(self, exc: Exception) -> None:
        self.seen.append(str(exc))

    @property
    def violations(self) -> list[str]:
        """The permission violations (TLS noise while closing left out)."""
        return [e for e in self.seen if "permissions violation" in e]

    async def wait(self, count: int, timeout: float = 5.0) -> list[str]:
        """The violations once there are `count` of them (the -ERR can trail the PONG of a flush)."""
        deadline = time.monotonic() + timeout
        while len(self.violations) < count:
            assert time.monotonic() < deadline, f"expected {count} violations, saw {self.seen}"
            await asyncio.sleep(0.01)
        return self.violations


async def _refused(url: str, tls: ssl.SSLContext | None = None) -> str:
    """How the broker refused the connection; fails the test if it was accepted.

    nats-py raises when the refusal reaches it while writing, and returns an
    unconnected client when the server closed the TLS connection while it waited for PONG.
    """
    try:
        nc = await nats.connect(url, tls=tls, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2,
                                error_cb=Errors().cb)
    except (nats.errors.Error, OSError, ssl.SSLError) as exc:
        return repr(exc)
    connected = nc.is_connected
    await nc.close()
    assert not connected, f"{url} accepted the connection"
    return "closed before PONG"


async def _connect(url: str, tls: ssl.SSLContext, name: str, errors: Errors | None = None) -> nats.NATS:
    return await nats.connect(url, tls=tls, inbox_prefix=inbox_prefix(name), allow_reconnect=False,
                              connect_timeout=5, error_cb=(errors or Errors()).cb)


async def test_client_certificate_cannot_subscribe_to_requests_or_another_users_inbox(nats_server_factory, ca_dir):
    broker = _secure(nats_server_factory, TrustSources(ca_dir=ca_dir))
    errors = Errors()
    nc = await _connect(broker.url, _as(ca_dir, "alice"), "alice", errors)
    try:
        await nc.subscribe("nmc.>")
        await nc.subscribe("_INBOX.bob.>")
        await nc.subscribe("_INBOX.>")
        own = await nc.subscribe("_INBOX.alice.x")
        await nc.publish("_INBOX.bob.forged", b"not a reply")  # users cannot write into inboxes either
        await nc.flush()
        assert await errors.wait(4) == ['nats: permissions violation for subscription to "nmc.>"',
                                        'nats: permissions violation for subscription to "_inbox.bob.>"',
                                        'nats: permissions violation for subscription to "_inbox.>"',
                                        'nats: permissions violation for publish to "_inbox.bob.forged"']
        assert nc.is_connected and own.subject == "_INBOX.alice.x"
    finally:
        await nc.close()
    assert len(errors.violations) == 4, "its own inbox is allowed"
    await _logged(broker, '"$G/user:alice" - Subscription Violation - Subject "nmc.>"')


async def test_node_certificate_cannot_publish_requests_or_hear_another_node(nats_server_factory, ca_dir):
    broker = _secure(nats_server_factory, TrustSources(ca_dir=ca_dir))
    errors = Errors()
    nc = await _connect(broker.url, _as(ca_dir, "web1.example.com"), "web1.example.com", errors)
    try:
        await nc.subscribe("nmc.nmc.node.web1%2Eexample%2Ecom.>")  # its own: allowed
        await nc.subscribe("nmc.nmc.node.web2%2Eexample%2Ecom.>")
        await nc.publish("nmc.nmc.all.rpcutil.ping", b"{}")
        await nc.publish("nmc.audit.nmc.web2%2Eexample%2Ecom", b"{}")  # another node's audit subject
        await nc.publish("$KV.nmc_registry.nmc.web2=2Eexample=2Ecom", b"{}")  # another node's registry key
        await nc.flush()
        await errors.wait(4)
    finally:
        await nc.close()
    assert errors.violations == [
        'nats: permissions violation for subscription to "nmc.nmc.node.web2%2eexample%2ecom.>"',
        'nats: permissions violation for publish to "nmc.nmc.all.rpcutil.ping"',
        'nats: permissions violation for publish to "nmc.audit.nmc.web2%2eexample%2ecom"',
        'nats: permissions violation for publish to "$kv.nmc_registry.nmc.web2=2eexample=2ecom"',
    ]


async def test_plain_anonymous_and_foreign_connections_are_refused(nats_server_factory, ca_dir, tmp_path):
    broker = _secure(nats_server_factory, TrustSources(ca_dir=ca_dir))
    plain_url = broker.url.replace("tls://", "nats://")
    other = tmp_path / "other-ca"
    pki.init_ca(other)
    pki.issue(other, "alice", roles=("user",))
    foreign = pki.issued_paths(other, "alice")
    # A plain client: the server announces tls_required and hangs up on a plaintext CONNECT.
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    info = json.loads((await reader.readline()).split(b" ", 1)[1])
    writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
    await writer.drain()
    answer = await reader.read(1024)
    writer.close()
    assert info["tls_required"] and info["tls_verify"] and answer == b""
    await _refused(plain_url)  # nats-py upgrades to TLS, but cannot present a certificate
    await _refused(broker.url, _tls(ca_dir / "ca.pem"))
    await _refused(broker.url, _tls(ca_dir / "ca.pem", foreign.certificate, foreign.key))
    await _logged(broker, "client didn't provide a certificate")
    await _logged(broker, "certificate signed by unknown authority")


async def test_user_names_are_what_verify_and_map_maps(nats_server_factory, tmp_path):
    """Email SAN, DNS SAN and a SAN-less (Puppet-style) subject each map to the user we render."""
    directory = tmp_path / "ca"
    pki.init_ca(directory)
    pki.issue(directory, "carol@example.com", roles=("user",))
    pki.issue(directory, "dave.users", roles=("user",))
    ca_key = load_private_key_pem((directory / "ca.key").read_bytes())
    ca_cert = load_certificate_pem((directory / "ca.pem").read_bytes())
    key, bare = issue_certificate(ca_key, ca_cert, "erin", roles=("user",))
    # Without the SAN extension nats-server falls back to the subject (RFC 2253).
    builder = x509.CertificateBuilder().subject_name(bare.subject).issuer_name(bare.issuer).public_key(
        bare.public_key()).serial_number(bare.serial_number).not_valid_before(bare.not_valid_before_utc) \
        .not_valid_after(bare.not_valid_after_utc)
    sanless = builder.sign(ca_key, None)
    (directory / "certs" / "erin.pem").write_bytes(certificate_pem(sanless))
    (directory / "private" / "erin.key").write_bytes(private_key_pem(key))
    assert not sanless.extensions and sanless.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "erin"

    broker = _secure(nats_server_factory, TrustSources(ca_dir=directory), http_port=0)
    expected = {"carol@example.com": "carol@example.com", "dave.users": "dave.users", "erin": "CN=erin,OU=user"}
    conns = [await _connect(broker.url, _as(directory, name), name) for name in expected]
    try:
        for nc, name in zip(conns, expected):
            await nc.subscribe(f"{inbox_prefix(name)}.x")
            await nc.flush()
        connz = await asyncio.to_thread(_get_json, f"{broker.monitor_url}/connz?auth=true")
    finally:
        for nc in conns:
            await nc.close()
    assert sorted(c["authorized_user"] for c in connz["connections"]) == sorted(expected.values())


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _write_cfg(path: Path, kind: str, values: dict[str, str]) -> Config:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()), encoding="utf-8")
    return load_config(path, kind=kind, env={})


def _security(ca: Path, cert: Path, key: Path, **more: str) -> dict[str, str]:
    return {"plugin.security.ca_file": str(ca), "plugin.security.cert_file": str(cert),
            "plugin.security.key_file": str(key), **more}


def _node_cfg(tmp_path: Path, url: str, ca_dir: Path, identity: str, **more: str) -> Config:
    paths = pki.issued_paths(ca_dir, identity)
    return _write_cfg(tmp_path / identity / "server.cfg", "server", {
        "identity": identity, "plugin.nats.servers": url, "factsource": "yaml",
        "audit.spool": str(tmp_path / identity / "audit.spool"),
        **_security(ca_dir / "ca.pem", paths.certificate, paths.key, **more)})


def _client_cfg(tmp_path: Path, url: str, ca_dir: Path, name: str) -> Config:
    paths = pki.issued_paths(ca_dir, name)
    return _write_cfg(tmp_path / f"{name}.cfg", "client", {
        "plugin.nats.servers": url, **_security(ca_dir / "ca.pem", paths.certificate, paths.key)})


async def test_fleet_works_under_the_generated_configuration(nats_server_factory, ca_dir, tmp_path):
    """tls:// URL and only plugin.security.* set: nodes register, answer ping and rpc; users read the registry."""
    pki.issue(ca_dir, "ops1", roles=("operator",))
    broker = _secure(nats_server_factory, TrustSources(ca_dir=ca_dir))
    # The operator's step first: nodes may write their registry key, but not create the bucket.
    await setup_as(_client_cfg(tmp_path, broker.url, ca_dir, "ops1"))
    nodes = [await build_node(_node_cfg(tmp_path, broker.url, ca_dir, name), agents=BUILTIN_AGENTS)
             for name in ("web1.example.com", "web2.example.com")]
    for node in nodes:
        await node.start()
    try:
        publishers = [c for node in nodes for c in node.companions if isinstance(c, RegistryPublisher)]
        assert [p.puts for p in publishers] == [1, 1], "each node wrote its own registry key"
        async with client_session(_client_cfg(tmp_path, broker.url, ca_dir, "alice")) as client:
            found = await client.discover()
            assert sorted(r.identity for r in found.results) == ["web1.example.com", "web2.example.com"]
            call = await client.call("rpcutil", "ping", {}, filter_expr="identity(web2.example.com)",
                                     expect=["web2.example.com"])
            assert [(r.identity, r.status) for r in call.results] == [("web2.example.com", Status.OK)]
            snapshot = await read_registry(client.nc, "nmc")
            assert sorted(e.identity for e in snapshot.entries) == ["web1.example.com", "web2.example.com"]
            micro = await client.nc.request("$SRV.PING.nmc-node", b"", timeout=5)
            assert json.loads(micro.data)["name"] == "nmc-node"
    finally:
        for node in nodes:
            await node.stop()


async def test_a_revoked_user_is_refused_by_a_running_node(nats_server_factory, ca_dir, tmp_path):
    crl, _ = pki.write_crl(ca_dir)
    broker = _secure(nats_server_factory, TrustSources(ca_dir=ca_dir))
    node = await build_node(_node_cfg(tmp_path, broker.url, ca_dir, "web1.example.com", **{
        "plugin.security.crl_file": str(crl), "plugin.security.crl_check_interval": "0", "registerinterval": "0"}),
        agents=BUILTIN_AGENTS)
    await node.start()
    try:
        async with client_session(_client_cfg(tmp_path, broker.url, ca_dir, "alice")) as client:
            before = await client.call("rpcutil", "ping", {}, expect=["web1.example.com"])
            assert [r.status for r in before.results] == [Status.OK]
            revoked = pki.revoke(ca_dir, "alice", reason="keyCompromise")
            after = await client.call("rpcutil", "ping", {}, expect=["web1.example.com"])
        [result] = after.results
        assert result.status == Status.INVALID_DATA
        assert result.message == (f"security: certificate 'alice' (serial {revoked.serial:x}) is revoked: "
                                  f"revoked {revoked_at(crl)} (keyCompromise)")
    finally:
        await node.stop()


def revoked_at(crl: Path) -> str:
    return x509.load_pem_x509_crl(crl.read_bytes())[0].revocation_date_utc.isoformat()


async def test_rotation_reload_admits_the_new_key_and_refuses_the_revoked_one(nats_server_factory, ca_dir):
    sources = TrustSources(ca_dir=ca_dir)
    broker = _secure(nats_server_factory, sources)
    old_ctx = _as(ca_dir, "alice")
    pki.issue(ca_dir, "alice", roles=("user",), force=True)  # rotation: the old certificate moves to old/
    new_ctx = _as(ca_dir, "alice")
    await _refused(broker.url, new_ctx)  # not admitted until the configuration is regenerated

    broker.reload(secure_broker_settings(broker.settings, sources)[0])
    for ctx in (old_ctx, new_ctx):  # both admitted while the new one is being deployed
        nc = await _connect(broker.url, ctx, "alice")
        await nc.close()

    archived = next(p for p in (ca_dir / "old").glob("alice.*.pem"))
    pki.revoke(ca_dir, "alice", serial=load_certificate_pem(archived.read_bytes()).serial_number,
               reason="superseded")
    broker.reload(secure_broker_settings(broker.settings, sources)[0])
    await _refused(broker.url, old_ctx)
    nc = await _connect(broker.url, new_ctx, "alice")
    await nc.close()
    await _logged(broker, "TLS handshake error: certificate not pinned")


async def test_policy_and_audit_services_get_what_they_need(nats_server_factory, ca_dir):
    """policy: a queue subscription on authz.check and answers; audit: reads the operator's stream by sequence.

    The audit service has no consumer (docs/security.md): it hears nmc.audit.> as a hint and reads
    the stored record with STREAM.MSG.GET.
    """
    from nmc.audit.stream import STREAM, ensure_stream

    pki.issue(ca_dir, "policy1", roles=("policy",))
    pki.issue(ca_dir, "audit1", roles=("audit",))
    pki.issue(ca_dir, "ops1", roles=("operator",))
    broker = _secure(nats_server_factory, TrustSources(ca_dir=ca_dir))
    errors = Errors()
    operator = await _connect(broker.url, _as(ca_dir, "ops1"), "ops1", errors)
    try:
        await ensure_stream(operator.jetstream())  # the operator's step: nobody else may create a stream
    finally:
        await operator.close()
    policy = await _connect(broker.url, _as(ca_dir, "policy1"), "policy1", errors)
    audit = await _connect(broker.url, _as(ca_dir, "audit1"), "audit1", errors)
    node = await _connect(broker.url, _as(ca_dir, "web1.example.com"), "web1.example.com", errors)
    try:
        async def answer(msg: Any) -> None:
            await msg.respond(b'{"allowed": true}')

        await policy.subscribe("nmc.nmc.authz.check", queue="nmc-policy", cb=answer)
        await policy.flush()
        reply = await node.request("nmc.nmc.authz.check", b"{}", timeout=5)
        assert reply.data == b'{"allowed": true}'
        await policy.publish("nmc.nmc.authz.reloaded", b"{}")

        js = audit.jetstream()
        assert (await ensure_stream(js, update=False)).config.name == STREAM  # looks it up, as the service does
        hints = await audit.subscribe("nmc.audit.>")
        await audit.flush()
        ack = await node.jetstream().publish("nmc.audit.nmc.web1%2Eexample%2Ecom", b'{"phase":"decision"}',
                                             headers={"Nats-Msg-Id": "r1:web1:decision"})
        assert ack.stream == STREAM
        assert (await hints.next_msg(timeout=5)).subject == "nmc.audit.nmc.web1%2Eexample%2Ecom"
        stored = await js.get_msg(STREAM, seq=1, subject="nmc.audit.>", next=True)
        assert (stored.seq, stored.data) == (ack.seq, b'{"phase":"decision"}')
        for nc in (policy, audit, node):
            await nc.flush()
    finally:
        for nc in (policy, audit, node):
            await nc.close()
    assert errors.violations == []


async def test_a_certificate_the_broker_does_not_admit_gets_a_one_line_reason(nats_server_factory, ca_dir, tmp_path):
    from nmc.ops.config.settings import SettingsError

    broker = _secure(nats_server_factory, TrustSources(ca_dir=ca_dir))
    pki.issue(ca_dir, "zed", roles=("user",))  # issued after the configuration was rendered
    with pytest.raises(SettingsError) as refused:
        async with client_session(_client_cfg(tmp_path, broker.url, ca_dir, "zed")):
            pass
    assert "does the broker admit certificate 'zed'?" in refused.value.reason
    assert "\n" not in refused.value.reason


async def test_cli_broker_with_tls_reloads_its_users_on_sighup(ca_dir, tmp_path):
    """`nmc ops broker --tls`: a certificate issued later is admitted after SIGHUP, without a restart."""
    import signal
    import subprocess
    import sys

    from nmc.ops.broker.server import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmc", "ops", "broker", "--tls", "--ca-dir", str(ca_dir), "--port", str(port),
         "--store", str(tmp_path / "broker" / "jetstream")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        ready = await asyncio.to_thread(proc.stdout.readline)
        assert ready.startswith(f"nmc broker ready at tls://127.0.0.1:{port}"), ready
        summary = await asyncio.to_thread(proc.stdout.readline)
        assert summary.startswith("TLS with verify_and_map: 4 certificate user(s): alice (user), bob (user)")
        pki.issue(ca_dir, "zed", roles=("user",))
        url = f"tls://127.0.0.1:{port}"
        await _refused(url, _as(ca_dir, "zed"))
        proc.send_signal(signal.SIGHUP)
        reloaded = await asyncio.to_thread(proc.stderr.readline)
        assert reloaded.startswith("broker reloaded: 5 certificate user(s)") and "zed (user)" in reloaded
        nc = await _connect(url, _as(ca_dir, "zed"), "zed")
        await nc.close()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "broker stopped" in err
