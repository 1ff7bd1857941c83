"""The puppet agent's pure parts and Puppet's state files, without a broker or a Puppet run."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from nmc.ops.config.files import KNOWN_KEYS, load_config
from nmc.ops.config.settings import node_settings
from nmc.protocol.ddl import InputError, validate_inputs
from nmc.protocol.status import Status
from nmc.services.agent import ActionFailed, ActionRequest
from nmc.services.agents import BUILTIN_AGENTS, Puppet
from nmc.services.agents import puppetstate as ps
from nmc.protocol.ddls.puppet import describe_age
from nmc.services.agents.puppet import (
    _status_data,
    _summary_data,
    run_argv,
)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 seconds"), (1, "1 second"), (59, "59 seconds"),
                                               (130, "2 minutes 10 seconds"), (3600, "1 hour"),
                                               (90061, "1 day 1 hour")])
def test_describe_age(seconds, text):
    assert describe_age(seconds) == text


def test_run_argv_appends_noop_and_tags():
    assert run_argv(("puppet", "apply", "site.pp")) == ["puppet", "apply", "site.pp"]
    assert run_argv(("puppet", "agent"), noop=True, tags=" apache , ssl::cert ") == [
        "puppet", "agent", "--noop", "--tags", "apache,ssl::cert"]


@pytest.mark.parametrize("tags", ["apache", "apache,ssl", "a::b, c.d-e", "Foo_1"])
def test_runonce_accepts_puppet_tags(tags):
    assert validate_inputs(Puppet.spec().actions["runonce"], {"tags": tags})["tags"] == tags


@pytest.mark.parametrize("tags", ["", "a,,b", "a;rm -rf /", "-a", "a b", "a,"])
def test_runonce_refuses_what_is_not_a_tag_list(tags):
    with pytest.raises(InputError) as info:
        validate_inputs(Puppet.spec().actions["runonce"], {"tags": tags})
    assert info.value.status == Status.INVALID_DATA


def test_settings_defaults_and_errors_name_the_key():
    cfg = ps.PuppetSettings.from_mapping({})
    assert cfg.command == tuple(ps.DEFAULT_COMMAND.split()) and cfg.splaylimit == 30
    assert cfg.statedir in (Path(ps.AIO_LAYOUT[0]), Path(ps.DEBIAN_LAYOUT[0]))
    assert KNOWN_KEYS["plugin.puppet.command"].default == ps.DEFAULT_COMMAND
    assert KNOWN_KEYS["plugin.puppet.splaylimit"].default == str(ps.DEFAULT_SPLAYLIMIT)
    custom = ps.PuppetSettings.from_mapping({"command": "puppet apply '/srv/my site.pp'", "statedir": "/s",
                                             "summary": "/p/s.yaml", "splaylimit": "5"})
    assert custom.command == ("puppet", "apply", "/srv/my site.pp") and custom.run_lock == Path("/s/agent_catalog_run.lock")
    for values, key in (({"splaylimit": "soon"}, "splaylimit"), ({"splaylimit": "-1"}, "splaylimit"),
                        ({"command": "puppet 'apply"}, "command")):
        with pytest.raises(ps.PuppetSettingsError) as info:
            ps.PuppetSettings.from_mapping(values)
        assert info.value.key == key and str(info.value).startswith(f"plugin.puppet.{key}: ")


def test_node_settings_hand_each_agent_its_plugin_settings(tmp_path):
    (tmp_path / "plugin.d").mkdir()
    (tmp_path / "server.cfg").write_text("identity = n1\nplugin.puppet.command = puppet apply /srv/site.pp\n")
    (tmp_path / "plugin.d" / "puppet.cfg").write_text("splaylimit = 7\n")
    settings = node_settings(load_config(tmp_path / "server.cfg", kind="server", env={}))
    assert settings.agent_settings["puppet"]["command"] == "puppet apply /srv/site.pp"
    assert settings.agent_settings["puppet"]["splaylimit"] == "7"
    assert Puppet in BUILTIN_AGENTS


async def test_a_misconfigured_agent_answers_every_action_with_the_broken_key():
    agent = Puppet(SimpleNamespace(identity="n1"), {"splaylimit": "soon"})
    with pytest.raises(ActionFailed) as info:
        await agent.status(ActionRequest(data={}, caller="cert=a", request_id="r", sender="s"))
    assert info.value.status == Status.UNKNOWN_ERROR
    assert info.value.message == ("the puppet agent is misconfigured: plugin.puppet.splaylimit: expected whole "
                                  "seconds, got 'soon'")


def _settings(tmp_path: Path) -> ps.PuppetSettings:
    return ps.PuppetSettings.from_mapping({"statedir": str(tmp_path / "state"), "summary": str(tmp_path / "s.yaml"),
                                           "pidfile": str(tmp_path / "agent.pid")})


def test_disable_writes_puppets_json_once_and_enable_removes_it(tmp_path):
    cfg = _settings(tmp_path)
    assert ps.disable(cfg, 'say "why" ✓') is True
    assert cfg.disabled_lock.read_bytes() == '{"disabled_message":"say \\"why\\" ✓"}'.encode()
    assert ps.disable(cfg, "other") is False, "an existing lock is never overwritten"
    state = ps.read_state(cfg)
    assert state.disabled and state.disable_message == 'say "why" ✓'
    assert ps.enable(cfg) is True and ps.enable(cfg) is False
    assert not ps.read_state(cfg).disabled


def test_a_lock_puppet_cannot_parse_still_means_disabled(tmp_path):
    cfg = _settings(tmp_path)
    cfg.statedir.mkdir()
    cfg.disabled_lock.write_text("")  # Puppet 3 wrote empty files
    assert ps.read_state(cfg).disabled and ps.read_state(cfg).disable_message == ""


def test_run_lock_of_a_dead_or_foreign_process_is_stale(tmp_path):
    cfg = _settings(tmp_path)
    proc = subprocess.Popen(["true"])
    proc.wait()
    ps.write_run_lock(cfg, proc.pid)
    assert ps.read_state(cfg).applying is False
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        ps.write_run_lock(cfg, sleeper.pid)
        assert ps.read_state(cfg).applying is False, "a live process that is not Puppet does not hold the lock"
        assert ps.read_state(cfg, own_pid=sleeper.pid).run_pid == sleeper.pid, "unless nmc started it"
        assert ps.clear_run_lock(cfg, os.getpid()) is False and cfg.run_lock.exists()
        assert ps.clear_run_lock(cfg, sleeper.pid) is True and not cfg.run_lock.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_status_and_summary_figures_from_a_summary():
    summary = {"version": {"config": 1700000000, "puppet": "7.23.0"},
               "resources": {"changed": 2, "failed": 1, "total": 9, "out_of_sync": 3, "corrective_change": 0},
               "time": {"total": 2.5, "config_retrieval": 0.4, "last_run": 1000},
               "changes": {"total": 2}, "events": {"failure": 1, "success": 2, "total": 3}}
    applying = ps.PuppetState(run_pid=42, disabled=True, disable_message="x", daemon_pid=None, summary=summary)
    data = _status_data(applying, now=1130)
    assert data["status"] == "applying a catalog" and data["enabled"] is False and data["pid"] == 42
    assert data["message"] == "Currently applying a catalog; last completed run 2 minutes 10 seconds ago"
    assert (data["changed_resources"], data["failed_resources"], data["total_resources"]) == (2, 1, 9)
    idle = _status_data(ps.PuppetState(None, False, "", 7, None), now=5)
    assert idle["status"] == "idling" and idle["lastrun"] == 0 and idle["since_lastrun"] is None
    figures = _summary_data(summary, now=1010)
    assert figures["since_lastrun"] == 10 and figures["config_version"] == "1700000000"
    assert (figures["out_of_sync_resources"], figures["failed_events"], figures["total_time"]) == (3, 1, 2.5)
    assert figures["resources"] == summary["resources"]


def test_runall_rejects_an_empty_window():
    from nmc.client.runall import runall

    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        asyncio.run(runall(None, concurrency=0, identities=[]))  # type: ignore[arg-type]
