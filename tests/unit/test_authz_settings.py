"""`authz.poll_interval`: how often local-mode nodes and the policy service look for changed policy files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmc.ops.config.files import load_config
from nmc.ops.config.settings import SettingsError, authz_settings, policy_service_settings


def cfg(tmp_path: Path, text: str):
    (tmp_path / "policies").mkdir(exist_ok=True)
    path = tmp_path / "server.cfg"
    path.write_text(f"authz.policydir = {tmp_path / 'policies'}\n" + text, encoding="utf-8")
    return load_config(path, kind="server", env={})


def test_poll_interval_defaults_to_one_second(tmp_path):
    assert authz_settings(cfg(tmp_path, "authz.mode = local\n")).poll_interval == 1.0
    assert policy_service_settings(cfg(tmp_path, "")).poll_interval == 1.0


def test_poll_interval_is_read_for_nodes_and_the_policy_service(tmp_path):
    config = cfg(tmp_path, "authz.mode = local\nauthz.poll_interval = 30\n")
    assert authz_settings(config).poll_interval == 30.0
    assert policy_service_settings(config).poll_interval == 30.0


@pytest.mark.parametrize("value", ["0", "-5"])
def test_poll_interval_must_be_positive(tmp_path, value):
    config = cfg(tmp_path, f"authz.mode = local\nauthz.poll_interval = {value}\n")
    for read in (authz_settings, policy_service_settings):
        with pytest.raises(SettingsError, match="poll_interval") as exc:
            read(config)
        assert "\n" not in str(exc.value)
