"""Registry KV keys: any collective and identity give a valid, distinct key; records parse strictly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js.kv import _is_key_valid

from nmc.ops.config.files import load_config
from nmc.ops.config.settings import SettingsError, client_settings, registry_settings
from nmc.protocol.registry import (
    RECORD_PROTOCOL,
    RecordError,
    RegistryEntry,
    check_bucket,
    collective_keys,
    kv_token,
    registry_key,
)
from nmc.services.registry import RegistrySettings

names = st.text(max_size=40)


@given(names, names)
def test_any_collective_and_identity_make_a_valid_kv_key(collective: str, identity: str) -> None:
    key = registry_key(collective, identity)
    assert _is_key_valid(key), key  # nats-py's own check, the one kv.put applies
    assert "%" not in key
    # Exactly one dot: the collective part can never reach into another collective's keys.
    assert key.count(".") == 1
    assert key.startswith(collective_keys(collective)[:-1])


@given(names, names, names, names)
def test_distinct_inputs_make_distinct_keys(c1: str, i1: str, c2: str, i2: str) -> None:
    if (c1, i1) != (c2, i2):
        assert registry_key(c1, i1) != registry_key(c2, i2)


@given(names, names)
def test_kv_token_is_one_to_one(a: str, b: str) -> None:
    if a != b:
        assert kv_token(a) != kv_token(b)


def test_kv_token_examples() -> None:
    assert kv_token("web1.example.net") == "web1=2Eexample=2Enet"
    assert kv_token("") == "="
    assert kv_token("a=b") == "a=3Db"  # a literal '=' is escaped too, so '=' always starts an escape
    assert registry_key("nmc", "node-1_a") == "nmc.node-1_a"
    assert collective_keys("prod eu") == "prod=20eu.>"


def test_bucket_names() -> None:
    assert check_bucket("nmc_registry-2") == "nmc_registry-2"
    for bad in ("", "a.b", "a b", "a>"):
        with pytest.raises(ValueError, match="may only hold"):
            check_bucket(bad)


@given(st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=10), st.booleans())),
       st.lists(st.text(max_size=10), max_size=4))
def test_record_round_trip(facts: dict, classes: list[str]) -> None:
    entry = RegistryEntry(identity="n1", collective="nmc", facts=facts, classes=tuple(classes),
                          agents=("rpcutil",), last_seen=1700000000.5, version="0.1", facts_version=3)
    assert RegistryEntry.from_bytes(entry.to_bytes()) == entry


def _record(**changes: object) -> bytes:
    obj = {"protocol": RECORD_PROTOCOL, "identity": "n1", "collective": "nmc", "facts": {}, "classes": [],
           "agents": [], "version": "0.1", "last_seen": 1.0, "facts_version": 0}
    obj.update(changes)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(("body", "reason"), [
    (b"\xff", "not UTF-8 JSON"),
    (b"[1]", "must be a JSON object"),
    (_record(protocol="nmc.registry.v0"), "protocol"),
    (_record(identity=""), "no identity"),
    (_record(facts=[]), "'facts'"),
    (_record(classes=["a", 1]), "'classes'"),
    (_record(last_seen=True), "'last_seen'"),
    (_record(facts_version="3"), "wrong type"),
])
def test_malformed_records_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(RecordError) as info:
        RegistryEntry.from_bytes(body)
    assert reason in info.value.reason


def test_registry_settings_defaults_and_validation() -> None:
    assert RegistrySettings().record_ttl == 180.0
    assert RegistrySettings(interval=0.5, ttl=2).record_ttl == 2
    with pytest.raises(ValueError, match="longer than the interval"):
        RegistrySettings(interval=10, ttl=10)
    with pytest.raises(ValueError, match="positive"):
        RegistrySettings(interval=0)


def test_config_keys_map_to_settings() -> None:
    server = load_config(None, kind="server", env={})
    assert registry_settings(server) == RegistrySettings(bucket="nmc_registry", interval=60.0)
    assert registry_settings(server.with_overrides({"registerinterval": "0"})) is None
    custom = server.with_overrides({"registerinterval": "5", "plugin.registry.bucket": "reg"})
    assert registry_settings(custom) == RegistrySettings(bucket="reg", interval=5.0)
    with pytest.raises(SettingsError, match="registerinterval"):
        registry_settings(server.with_overrides({"registerinterval": "-1"}))
    client = load_config(None, kind="client", env={})
    assert client_settings(client.with_overrides({"plugin.registry.bucket": "reg"})).registry_bucket == "reg"
    with pytest.raises(SettingsError, match="plugin.registry.bucket"):
        client_settings(client.with_overrides({"plugin.registry.bucket": "a.b"}))
