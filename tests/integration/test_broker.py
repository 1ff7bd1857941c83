"""The embedded broker against the real nats-server binary: start, restart, stop, TLS, bad config, CLI."""

from __future__ import annotations

import datetime
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nats
import nats.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nats.js.api import StreamConfig

from nmc.ops.broker.server import Broker, BrokerError, BrokerSettings, free_port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_client_connects_and_round_trips(nats_server: Broker) -> None:
    assert nats_server.running
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    nc = await nats.connect(nats_server.url)
    try:
        sub = await nc.subscribe("nmc.test")
        await nc.publish("nmc.test", b"hello")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"hello"
    finally:
        await nc.close()


async def test_restart_keeps_port_and_jetstream_store(nats_server: Broker) -> None:
    port, pid = nats_server.port, nats_server.pid
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="AUDIT", subjects=["nmc.audit.>"]))
    await js.publish("nmc.audit.node1", b"record")
    await nc.close()

    nats_server.restart()

    assert nats_server.port == port
    assert nats_server.pid != pid
    nc = await nats.connect(nats_server.url)
    try:
        info = await nc.jetstream().stream_info("AUDIT")
        assert info.state.messages == 1
    finally:
        await nc.close()


def test_stop_frees_the_port(nats_server: Broker) -> None:
    port = nats_server.port
    assert not _port_is_free(port)
    nats_server.stop()
    assert not nats_server.running
    assert nats_server.pid is None
    assert _port_is_free(port)


def test_context_manager_starts_and_stops(tmp_path: Path) -> None:
    with Broker(BrokerSettings(port=0), tmp_path) as server:
        assert server.running
        port = server.port
    assert not server.running
    assert _port_is_free(port)


def test_missing_tls_file_raises_with_log_lines(nats_server_factory: Callable[..., Broker], tmp_path: Path) -> None:
    server = nats_server_factory(start=False, tls_cert=tmp_path / "missing.pem", tls_key=tmp_path / "missing.key")
    with pytest.raises(BrokerError, match="exited with code") as info:
        server.start(timeout=10)
    assert any("missing.pem" in line and "no such file" in line for line in info.value.log_lines)
    assert "missing.pem" in str(info.value)
    assert "\n" not in str(info.value)
    assert not server.running


def test_port_in_use_raises(nats_server: Broker, tmp_path: Path) -> None:
    second = Broker(BrokerSettings(port=nats_server.port), tmp_path / "second")
    with pytest.raises(BrokerError) as info:
        second.start()
    assert "address already in use" in str(info.value)
    assert nats_server.running


def test_start_twice_is_refused(nats_server: Broker) -> None:
    with pytest.raises(BrokerError, match="already running"):
        nats_server.start()


async def test_monitoring_endpoint(nats_server_factory: Callable[..., Broker]) -> None:
    import json
    import urllib.request

    server = nats_server_factory(http_port=0, server_name="monitored")
    assert server.monitor_url is not None
    with urllib.request.urlopen(f"{server.monitor_url}/varz", timeout=5) as resp:
        varz = json.load(resp)
    assert varz["server_name"] == "monitored"
    assert varz["port"] == server.port


# --- mutual TLS ---------------------------------------------------------------


def _write_pki(directory: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
             *, ca: bool = False, ip: str | None = None) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ip is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                            critical=False)
        return builder.sign(signer, hashes.SHA256())

    paths: dict[str, Path] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    ca_cert = cert("test ca", ca_key, ca_name, ca_key, ca=True)
    paths["ca"] = directory / "ca.pem"
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for name, ip in (("server", "127.0.0.1"), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        paths[f"{name}_cert"] = directory / f"{name}.pem"
        paths[f"{name}_cert"].write_bytes(cert(name, key, ca_name, ca_key, ip=ip).public_bytes(serialization.Encoding.PEM))
        paths[f"{name}_key"] = directory / f"{name}.key"
        paths[f"{name}_key"].write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return paths


async def test_mutual_tls(nats_server_factory: Callable[..., Broker], tmp_path: Path) -> None:
    pki = _write_pki(tmp_path)
    server = nats_server_factory(tls_cert=pki["server_cert"], tls_key=pki["server_key"], tls_ca=pki["ca"],
                                 tls_verify=True)
    assert server.url.startswith("tls://127.0.0.1:")

    async def quiet(exc: Exception) -> None:
        """nats-py prints a traceback per error by default; the raised exception is what we check."""

    anonymous = ssl.create_default_context(cafile=str(pki["ca"]))
    # The server drops a client without a certificate; nats-py reports the
    # broken handshake as an OSError (broken pipe, SSL error) or a NATS error.
    with pytest.raises((OSError, nats.errors.Error)):
        await nats.connect(server.url, tls=anonymous, allow_reconnect=False, connect_timeout=2, error_cb=quiet)

    with_cert = ssl.create_default_context(cafile=str(pki["ca"]))
    with_cert.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
    nc = await nats.connect(server.url, tls=with_cert, allow_reconnect=False, connect_timeout=5)
    try:
        sub = await nc.subscribe("nmc.tls")
        await nc.publish("nmc.tls", b"secret")
        assert (await sub.next_msg(timeout=5)).data == b"secret"
    finally:
        await nc.close()


# --- nmc ops broker (foreground) --------------------------------------------------


def test_cli_runs_in_foreground_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "broker" / "jetstream"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from nmc.cli.broker_cmd import broker; broker()", "--port", str(port),
         "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the broker is ready (or the command fails)
        assert first.startswith(f"nmc broker ready at nats://127.0.0.1:{port}"), first + proc.stderr.read()
        assert not _port_is_free(port)
        assert (tmp_path / "broker" / "nats-server.conf").exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "broker stopped" in err
    assert _port_is_free(port)


@pytest.mark.parametrize("cluster", [False, True], ids=["one server", "cluster of 3"])
def test_cli_json_ready_line_names_the_servers_and_the_client_setting(tmp_path: Path, cluster: bool) -> None:
    """`nmc ops broker --json`: one JSON line once ready (logs on stderr); its URLs accept clients."""
    args = ["--port", "0", "--store", str(tmp_path / "broker" / "jetstream"), "--json"]
    if cluster:
        args += ["--cluster", "3", "--cluster-port", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "nmc", "ops", "broker", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        size = 3 if cluster else 1
        assert len(ready["servers"]) == size and ready["jetstream_replicas"] == (3 if cluster else 1)
        assert ready["plugin.nats.servers"] == ",".join(s["url"] for s in ready["servers"])
        assert ready["users"] is None  # no --tls: no certificate users
        for server in ready["servers"]:
            host, port = server["url"].removeprefix("nats://").rsplit(":", 1)
            assert not _port_is_free(int(port))
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
