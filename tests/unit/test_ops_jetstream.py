"""The operator's JetStream step (nmc.ops.broker.jetstream) and the stream settings it gives (pure parts)."""

from __future__ import annotations

import pytest

from nmc.audit.stream import stream_config
from nmc.ops.config.files import Config, Setting
from nmc.ops.broker.jetstream import JetStreamSetup
from nmc.services.registry import bucket_config


def test_the_registry_bucket_refuses_rollups_purges_and_deletes():
    config = bucket_config("nmc_registry", ttl=180, replicas=3)
    assert (config.name, config.subjects, config.max_msgs_per_subject) == ("KV_nmc_registry", ["$KV.nmc_registry.>"], 1)
    assert (config.allow_rollup_hdrs, config.deny_purge, config.deny_delete, config.allow_direct) == (
        False, True, True, False)
    assert (config.max_age, config.duplicate_window, config.num_replicas) == (180, 120, 3)
    assert bucket_config(ttl=30).duplicate_window == 30  # never longer than the TTL
    for bad in ({"ttl": 0}, {"ttl": float("nan")}, {"replicas": 6}, {"bucket": "a.b"}):
        with pytest.raises(ValueError):
            bucket_config(**bad)  # type: ignore[arg-type]


def test_the_audit_stream_refuses_rollups_purges_and_deletes():
    config = stream_config(90 * 86400)
    assert (config.allow_rollup_hdrs, config.deny_purge, config.deny_delete, config.subjects) == (
        False, True, True, ["nmc.audit.>"])


def test_setup_takes_bucket_and_replicas_from_the_operators_config():
    config = Config({"plugin.registry.bucket": Setting("plugin.registry.bucket", "other_registry", "test"),
                     "plugin.nats.jetstream_replicas": Setting("plugin.nats.jetstream_replicas", "3", "test")})
    setup = JetStreamSetup.from_config(config, audit_max_age=3600.0, registry_ttl=None)
    assert (setup.registry_bucket, setup.replicas, setup.audit_max_age, setup.registry_ttl) == (
        "other_registry", 3, 3600.0, 180.0)
    for bad in ({"registry_ttl": 0.0}, {"replicas": 0}, {"registry_bucket": "no spaces"}):
        with pytest.raises(ValueError):
            JetStreamSetup(**bad)  # type: ignore[arg-type]
