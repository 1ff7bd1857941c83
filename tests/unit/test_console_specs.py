"""The console labels replies with the DDLs `nmc jobs show` would use: built-ins plus its plugindir's agents."""

from __future__ import annotations

from pathlib import Path

from nmc.ops.config.files import load_config
from nmc.ops.console.nodeview import agent_ddls
from nmc.ops.console.service import _known_specs

PLUGINS = Path(__file__).resolve().parents[1] / "integration" / "plugins"


def _config(tmp_path: Path, plugindir: Path) -> object:
    cfg = tmp_path / "console.cfg"
    cfg.write_text(f"plugindir = {plugindir}\n")
    return load_config(cfg, kind="client", env={})


def test_the_console_knows_its_plugindirs_agents_and_the_node_page_lists_their_actions(tmp_path):
    specs = _known_specs(_config(tmp_path, PLUGINS))
    assert {"rpcutil", "puppet", "hello"} <= set(specs)
    greet = specs["hello"].actions
    assert any(o.label == "Greeting" for a in greet.values() for o in a.outputs)
    [hello, mystery] = agent_ddls(["hello", "mystery"], specs)
    assert hello["known"] and hello["actions"] and not mystery["known"] and mystery["actions"] == []


def test_a_plugin_that_does_not_load_leaves_the_built_ins(tmp_path):
    broken = tmp_path / "plugins"
    broken.mkdir()
    (broken / "broken.py").write_text("raise RuntimeError('not an agent')\n")
    specs = _known_specs(_config(tmp_path, broken))
    assert "rpcutil" in specs and "hello" not in specs
