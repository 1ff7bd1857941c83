"""`nmc config show` / `nmc config keys` through click's CliRunner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nmc.cli.config_cmd import config
from nmc.ops.config.files import KNOWN_KEYS


@click.group()
@click.option("--config", "-c", "config_path", default=None)
@click.pass_context
def root(ctx: click.Context, config_path: str | None) -> None:
    """A stand-in for the real root group: stores --config the same way."""
    ctx.obj = {"config_path": config_path}


root.add_command(config)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A runner that cannot see the developer's own NMC_* variables or config files."""
    for name in list(os.environ):
        if name.startswith("NMC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NMC_ETC_DIR", str(tmp_path / "etc-nmc"))  # never this machine's /etc/nmc
    return CliRunner()


@pytest.fixture
def server_cfg(tmp_path: Path) -> Path:
    """A server.cfg with two plugin.d drop-ins next to it."""
    etc = tmp_path / "etc"
    (etc / "plugin.d").mkdir(parents=True)
    (etc / "server.cfg").write_text(
        "# fleet node\nmain_collective = prod\nidentity = web1\nplugin.nats.servers = nats://main:4222\n"
    )
    (etc / "plugin.d" / "nats.cfg").write_text("servers = nats://a:4222,nats://b:4222\n")
    (etc / "plugin.d" / "puppet.cfg").write_text("\ncommand = puppet agent --onetime\n")
    return etc / "server.cfg"


def rows(output: str) -> dict[str, tuple[str, str]]:
    """The table part of `config show` output as key -> (value, origin)."""
    header, *lines = output.splitlines()[1:]
    value_at, origin_at = header.index("VALUE"), header.index("ORIGIN")
    return {
        line[:value_at].strip(): (line[value_at:origin_at].strip(), line[origin_at:].strip()) for line in lines
    }


def test_show_server_merges_main_file_and_dropins_with_origins(runner: CliRunner, server_cfg: Path) -> None:
    result = runner.invoke(root, ["config", "show", "--server", "--file", str(server_cfg)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"config file: {server_cfg}"
    assert lines[1].split() == ["KEY", "VALUE", "ORIGIN"]
    table = rows(result.output)
    dropins = server_cfg.parent / "plugin.d"
    assert table["main_collective"] == ("prod", f"{server_cfg}:2")
    assert table["identity"] == ("web1", f"{server_cfg}:3")
    assert table["plugin.nats.servers"] == ("nats://a:4222,nats://b:4222", f"{dropins / 'nats.cfg'}:1")
    assert table["plugin.puppet.command"] == ("puppet agent --onetime", f"{dropins / 'puppet.cfg'}:2")
    assert table["agent_timeout"] == ("60", "default")
    assert table["plugin.nats.tls_ca"] == ('""', "default")
    assert "timeout" not in table  # a client-only key
    assert list(table) == sorted(table)


def test_show_uses_root_config_option_and_environment(runner: CliRunner, tmp_path: Path) -> None:
    client = tmp_path / "client.cfg"
    client.write_text("timeout = 30\nmain_collective = dev\n")
    result = runner.invoke(root, ["--config", str(client), "config", "show"], env={"NMC_MAIN_COLLECTIVE": "prod"})
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert table["timeout"] == ("30", f"{client}:1")
    assert table["main_collective"] == ("prod", "env NMC_MAIN_COLLECTIVE")
    assert "identity" not in table  # a server-only key


def test_show_json_limited_to_keys(runner: CliRunner, server_cfg: Path) -> None:
    result = runner.invoke(
        root, ["config", "show", "--server", "--json", "--file", str(server_cfg), "plugin.nats.servers", "TTL"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"key": "plugin.nats.servers", "value": "nats://a:4222,nats://b:4222",
         "origin": f"{server_cfg.parent / 'plugin.d' / 'nats.cfg'}:1"},
        {"key": "ttl", "value": "60", "origin": "default"},
    ]


def test_show_without_any_file_says_so(runner: CliRunner) -> None:
    result = runner.invoke(root, ["config", "show", "main_collective"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "no config file found; defaults and environment only"
    assert rows(result.output) == {"main_collective": ("nmc", "default")}


def test_show_syntax_error_is_one_line_without_traceback(runner: CliRunner, server_cfg: Path) -> None:
    (server_cfg.parent / "plugin.d" / "puppet.cfg").write_text("command = x\nsplay\n")
    result = runner.invoke(root, ["config", "show", "--server", "--file", str(server_cfg)])
    assert result.exit_code == 1
    bad = server_cfg.parent / "plugin.d" / "puppet.cfg"
    assert result.output == f"Error: {bad}:2: expected 'key = value', got 'splay'\n"
    assert "Traceback" not in result.output


def test_show_missing_file_and_unknown_key_are_errors(runner: CliRunner, tmp_path: Path, server_cfg: Path) -> None:
    missing = runner.invoke(root, ["config", "show", "--file", str(tmp_path / "nope.cfg")])
    assert (missing.exit_code, missing.output) == (1, f"Error: config file not found: {tmp_path / 'nope.cfg'}\n")
    unknown = runner.invoke(root, ["config", "show", "--server", "--file", str(server_cfg), "no.such.key"])
    assert (unknown.exit_code, unknown.output) == (
        1, "Error: not set and not a known server key: no.such.key (see `nmc config keys` for the keys nmc knows)\n")


def test_show_help_has_an_example(runner: CliRunner) -> None:
    result = runner.invoke(root, ["config", "show", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "nmc config show" in result.output


def test_keys_lists_every_known_key(runner: CliRunner) -> None:
    table = runner.invoke(root, ["config", "keys"])
    assert table.exit_code == 0
    listed = [line.split()[0] for line in table.output.splitlines()[1:]]
    assert listed == sorted(KNOWN_KEYS)
    as_json = json.loads(runner.invoke(root, ["config", "keys", "--json"]).output)
    by_key = {item["key"]: item for item in as_json}
    assert by_key["discovery_stall"] == {
        "key": "discovery_stall", "default": "0.3", "kinds": ["client"], "is_path": False,
        "description": KNOWN_KEYS["discovery_stall"].description,
    }
    assert by_key["plugin.yaml"]["is_path"] is True
