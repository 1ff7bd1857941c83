"""Certificates from an existing Puppet CA, used as they are (docs/security.md, "Using a Puppet CA").

The CA here is built with `cryptography` the way Puppet's is: RSA, subjects
with only a CN, no SAN on agent certificates, PKCS#1 private keys, and
Puppet's directory layout (`ssl/certs`, `ssl/private_keys`, `ssl/crl.pem`,
the CA's `signed/`). The broker configuration is rendered by nmc from those
files; a node and a client configured only with Puppet's paths talk to each other.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nmc.cli.common import client_session
from nmc.ops.broker.server import BrokerSettings
from nmc.ops.broker.authorization import Scope, TrustSources, secure_broker_settings
from nmc.ops.config.files import load_config
from nmc.ops.daemon.serve import build_node
from nmc.protocol.status import Status
from nmc.security.crl import build_crl, crl_pem
from nmc.services.agents import BUILTIN_AGENTS

UTC = dt.timezone.utc


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pkcs1(key: rsa.RSAPrivateKey) -> bytes:
    # Puppet writes "-----BEGIN RSA PRIVATE KEY-----" (PKCS#1).
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class PuppetCA:
    """An RSA CA in Puppet's layout: <ssl>/certs, <ssl>/private_keys, <ssl>/crl.pem, <ca>/signed."""

    def __init__(self, root: Path) -> None:
        self.ssl = root / "puppet" / "ssl"
        self.signed = root / "puppetserver" / "ca" / "signed"
        for d in (self.ssl / "certs", self.ssl / "private_keys", self.signed):
            d.mkdir(parents=True)
        self.key = _key()
        now = dt.datetime.now(UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Puppet CA: puppet.example.com")])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(1)
                     .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                    critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file.write_bytes(_pem(self.cert))
        (self.ssl / "crl.pem").write_bytes(crl_pem(build_crl(self.key, self.cert, [])))
        self._serial = 1

    @property
    def ca_file(self) -> Path:
        return self.ssl / "certs" / "ca.pem"

    def sign(self, certname: str, *, alt_names: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """What `puppet ssl bootstrap` + signing leave behind for `certname`: its cert and key paths."""
        key = _key()
        now = dt.datetime.now(UTC)
        self._serial += 1
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, certname)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(self._serial)
                   .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1825))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if alt_names:
            sans: list[x509.GeneralName] = [x509.DNSName(certname)]
            for alt in alt_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(alt)))
                except ValueError:
                    sans.append(x509.DNSName(alt))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path = self.ssl / "certs" / f"{certname}.pem"
        key_path = self.ssl / "private_keys" / f"{certname}.pem"
        cert_path.write_bytes(_pem(cert))
        key_path.write_bytes(_pkcs1(key))
        (self.signed / f"{certname}.pem").write_bytes(_pem(cert))
        return cert_path, key_path


@pytest.fixture
def puppet(tmp_path: Path) -> PuppetCA:
    return PuppetCA(tmp_path)


async def test_puppet_rsa_certificates_work_end_to_end(nats_server_factory, puppet, tmp_path):
    broker_cert, broker_key = puppet.sign("broker.example.com", alt_names=("localhost", "127.0.0.1"))
    node_cert, node_key = puppet.sign("web1.example.com")
    user_cert, user_key = puppet.sign("alice.users")
    assert b"BEGIN RSA PRIVATE KEY" in node_key.read_bytes()
    assert not x509.load_pem_x509_certificate(node_cert.read_bytes()).extensions.get_extension_for_class(
        x509.BasicConstraints).value.ca

    sources = TrustSources(ca_file=puppet.ca_file, crl_file=puppet.ssl / "crl.pem", server_cert=broker_cert,
                           server_key=broker_key, extra_certs=(puppet.signed,),
                           role_patterns=(("user", "*.users"), ("node", "*")))
    secured, auth = secure_broker_settings(BrokerSettings(), sources, Scope())
    assert {(u.user, u.roles) for u in auth.users} == {("CN=alice.users", ("user",)),
                                                      ("CN=web1.example.com", ("node",))}
    broker = nats_server_factory(**{k: getattr(secured, k) for k in (
        "tls_cert", "tls_key", "tls_ca", "tls_map", "tls_pinned", "authorization")})

    def cfg(name: str, kind: str, cert: Path, key: Path, **more: str):
        path = tmp_path / f"{name}.cfg"
        values = {"plugin.nats.servers": broker.url, "plugin.security.ca_file": str(puppet.ca_file),
                  "plugin.security.cert_file": str(cert), "plugin.security.key_file": str(key),
                  "plugin.security.crl_file": str(puppet.ssl / "crl.pem"), **more}
        path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()), encoding="utf-8")
        return load_config(path, kind=kind, env={})

    node = await build_node(cfg("server", "server", node_cert, node_key, identity="web1.example.com",
                                factsource="yaml", registerinterval="0",
                                **{"audit.spool": str(tmp_path / "audit.spool")}),
                            agents=BUILTIN_AGENTS)
    await node.start()
    try:
        async with client_session(cfg("client", "client", user_cert, user_key)) as client:
            assert client.signer.caller == "cert=alice.users"
            result = await client.call("rpcutil", "ping", {}, expect=["web1.example.com"])
    finally:
        await node.stop()
    assert [(r.identity, r.status) for r in result.results] == [("web1.example.com", Status.OK)]
    assert result.dropped == 0
