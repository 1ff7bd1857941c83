"""audit.* configuration keys to the node's and the audit service's settings (nmc.ops.config.settings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from nmc.audit.sinks import SyslogTarget
from nmc.ops import pki
from nmc.ops.config.files import ConfigError, load_config
from nmc.ops.config.settings import (
    SettingsError,
    audit_service_settings,
    audit_settings,
    default_spool_path,
    parse_duration,
    record_verifier,
    retired_audit_keys,
)
from nmc.ops.daemon.serve import build_audit_service


def cfg(tmp_path: Path, text: str):
    path = tmp_path / "etc" / "x.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return load_config(path, kind="server", env={})


def test_node_defaults(tmp_path: Path) -> None:
    settings = audit_settings(cfg(tmp_path, ""), "web1.example.com")
    assert settings is not None
    assert settings.spool == default_spool_path("web1.example.com")
    assert settings.spool.name == "web1.example.com.spool"
    assert (settings.required, settings.ack_timeout, settings.max_age) == (False, 2.0, 30 * 86400)


def test_node_keys(tmp_path: Path) -> None:
    settings = audit_settings(cfg(tmp_path, "audit.spool = spool/a.spool\naudit.required = yes\naudit.ack_timeout = 0.5\n"
                                           "audit.max_age = 12h\naudit.spool_max_bytes = 1000\n"), "n")
    assert settings is not None
    assert settings.spool == tmp_path / "etc" / "spool" / "a.spool"  # relative to the config file
    assert (settings.required, settings.ack_timeout, settings.max_age, settings.spool_max_bytes) == (True, 0.5, 43200, 1000)
    assert audit_settings(cfg(tmp_path, "audit.enabled = false\n"), "n") is None


@pytest.mark.parametrize(("text", "key"), [
    ("audit.max_age = soon\n", "audit.max_age"),
    ("audit.ack_timeout = -1\n", "ack timeout"),
    ("audit.spool_max_bytes = 0\n", "audit.spool_max_bytes"),
    ("audit.required = perhaps\n", "audit.required"),
])
def test_node_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises((SettingsError, ConfigError)) as info:
        audit_settings(cfg(tmp_path, text), "n")
    assert key in str(info.value)


def test_service_keys(tmp_path: Path) -> None:
    settings = audit_service_settings(cfg(tmp_path, "plugin.nats.servers = nats://a:4222,nats://b:4222\n"
                                                    "audit.file = log/audit.jsonl\naudit.format = mcollective\n"
                                                    "audit.rotate_bytes = 5000\naudit.keep = 3\n"
                                                    "audit.syslog = tcp://127.0.0.1:6514\naudit.syslog_facility = authpriv\n"
                                                    "audit.position_file = state/audit.position\naudit.max_age = 0\n"))
    assert settings.file == tmp_path / "etc" / "log" / "audit.jsonl"
    assert settings.servers == ("nats://a:4222", "nats://b:4222")
    assert (settings.format, settings.rotate_bytes, settings.keep) == ("mcollective", 5000, 3)
    assert settings.syslog == SyslogTarget("tcp", host="127.0.0.1", port=6514)
    assert (settings.syslog_facility, settings.max_age) == ("authpriv", 0)
    assert settings.position_path == tmp_path / "etc" / "state" / "audit.position"  # relative to the config file
    defaults = audit_service_settings(cfg(tmp_path, ""))
    assert defaults.file.name == "audit.jsonl" and defaults.syslog is None and defaults.format == "json"
    assert defaults.position_file is None and defaults.position_path == defaults.file.with_name("audit.jsonl.position")


@pytest.mark.parametrize(("text", "key"), [
    ("audit.syslog = http://x\n", "audit.syslog"),
    ("audit.format = xml\n", "audit.format"),
    ("audit.syslog_facility = nope\n", "audit.syslog_facility"),
    ("audit.file = a/audit.jsonl\naudit.position_file = a/audit.jsonl\n", "audit.position_file"),
    ("audit.file = a/audit.jsonl\naudit.position_file = a/audit.jsonl.2\n", "audit.position_file"),
    ("audit.keep = -1\n", "audit.keep"),
])
def test_service_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(SettingsError) as info:
        audit_service_settings(cfg(tmp_path, text))
    assert key in info.value.reason


def test_retired_consumer_keys_are_reported_and_ignored(tmp_path: Path) -> None:
    # The service read through a durable consumer before issue 14; a config written for it still starts.
    pki.init_ca(tmp_path / "ca")
    config = cfg(tmp_path, f"plugin.security.ca_file = {tmp_path / 'ca' / 'ca.pem'}\naudit.file = audit.jsonl\n"
                           "audit.consumer = siem\naudit.ack_wait = 5\n")
    assert [(key, origin.startswith(str(tmp_path))) for key, origin, _ in retired_audit_keys(config)] == [
        ("audit.consumer", True), ("audit.ack_wait", True)]
    assert retired_audit_keys(cfg(tmp_path, "audit.file = audit.jsonl\n")) == []
    with capture_logs() as logs:
        service = build_audit_service(config)
    retired = [e for e in logs if e["event"] == "config_key_retired"]
    assert [e["key"] for e in retired] == ["audit.consumer", "audit.ack_wait"]
    assert all("no longer used" in e["message"] and "\n" not in e["message"] for e in retired)
    assert "audit.position_file" in retired[0]["message"]
    assert service.settings.position_path == tmp_path / "etc" / "audit.jsonl.position"


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000),
                                               ("2w", 1209600), ("0", 0), ("1.5h", 5400), ("", None), ("x", None),
                                               ("-1d", None), ("infd", None)])
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_records_are_verified_against_the_fleet_ca_or_the_service_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as missing:
        record_verifier(cfg(tmp_path, "audit.file = a.jsonl\n"))
    assert "plugin.security.ca_file is not set" in missing.value.reason and "\n" not in missing.value.reason
    pki.init_ca(tmp_path / "ca")
    verifier = record_verifier(cfg(tmp_path, f"plugin.security.ca_file = {tmp_path / 'ca' / 'ca.pem'}\n"
                                             "audit.node_names = *.example.com, web?\n"))
    assert verifier.node_names == ("*.example.com", "web?")
