"""Loading agents: built-ins, `nmc.agents` entry points (a real dist-info on sys.path) and plugin files."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from nmc.services.agents import BUILTIN_AGENTS, RpcUtil
from nmc.services.loader import PluginError, load_agents

AGENT = '''
from nmc.services.agent import Agent, action


class {cls}(Agent):
    name = "{name}"
    description = "{name} from a test"
    version = "{version}"
    {extra}

    @action("Say hi")
    async def hi(self, req):
        return {{"hi": "{name}"}}
'''


def agent_source(name: str, cls: str = "Thing", version: str = "1.0.0", extra: str = "") -> str:
    return textwrap.dedent(AGENT.format(name=name, cls=cls, version=version, extra=extra))


def plugin_dir(tmp_path: Path, files: dict[str, str], name: str = "plugins") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    for filename, text in files.items():
        (directory / filename).write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a distribution the way pip would (package + dist-info with entry_points.txt) onto sys.path."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    made: list[str] = []

    def install(module: str, source: str, entry_points: dict[str, str], dist: str = "nmc_test_plugin") -> None:
        (root / f"{module}.py").write_text(source, encoding="utf-8")
        info = root / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
        lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[nmc.agents]\n{lines}", encoding="utf-8")
        made.append(module)

    yield install
    for module in made:
        sys.modules.pop(module, None)


def names(loaded) -> list[tuple[str, str]]:
    return [(a.name, a.source) for a in loaded]


def test_builtins_alone() -> None:
    loaded = load_agents(group="nmc.test.nothing")
    assert [a.cls for a in loaded] == list(BUILTIN_AGENTS)
    assert {a.source for a in loaded} == {"builtin"}
    assert loaded[0].origin == "nmc.services.agents.rpcutil:RpcUtil"


def test_entry_point_agents_are_loaded(site) -> None:
    site("nmc_ep_hello", agent_source("ephello", cls="EpHello", version="2.1.0"),
         {"ephello": "nmc_ep_hello:EpHello"})
    loaded = load_agents()
    ep = [a for a in loaded if a.name == "ephello"]
    assert names(ep) == [("ephello", "entry point")]
    assert ep[0].origin == "entry point ephello = nmc_ep_hello:EpHello"
    assert ep[0].cls.version == "2.1.0" and "hi" in ep[0].cls.spec().actions


def test_entry_point_that_is_not_an_agent_is_refused(site) -> None:
    site("nmc_ep_bad", "VALUE = 3\n", {"bad": "nmc_ep_bad:VALUE"})
    with pytest.raises(PluginError) as info:
        load_agents()
    assert info.value.reason == "entry point bad = nmc_ep_bad:VALUE: is not an Agent subclass with a name"


def test_entry_point_that_fails_to_import_is_named(site) -> None:
    site("nmc_ep_broken", "import nmc_no_such_module\n", {"broken": "nmc_ep_broken:Broken"})
    with pytest.raises(PluginError) as info:
        load_agents()
    assert info.value.reason == ("entry point broken = nmc_ep_broken:Broken: cannot load: "
                                 "ModuleNotFoundError: No module named 'nmc_no_such_module'")


def test_plugin_dir_loads_every_agent_defined_in_its_files(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, {
        "one.py": agent_source("one"),
        "two.py": agent_source("two", cls="Two") + agent_source("three", cls="Three")
        + "\nclass Base(Agent):\n    pass\n",  # no name: a base class, not an agent
        "reuse.py": "from nmc.services.agents.rpcutil import RpcUtil\n",  # imported, not defined here
        "_helper.py": "raise RuntimeError('never imported')\n",
        "notes.txt": "not python",
    })
    loaded = load_agents([directory], builtins=(RpcUtil,), group="nmc.test.nothing")
    assert names(loaded) == [("rpcutil", "builtin"), ("one", "plugin dir"), ("three", "plugin dir"),
                             ("two", "plugin dir")]
    assert loaded[1].origin == str(directory / "one.py")
    # Imported under a private name: nothing in the plugin dir can shadow a real module.
    assert loaded[1].cls.__module__.startswith("_nmc_plugin_")


def test_broken_plugin_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, {"ok.py": agent_source("ok"), "broken.py": "def oops(:\n    pass\n"})
    with pytest.raises(PluginError) as info:
        load_agents([directory], group="nmc.test.nothing")
    reason = info.value.reason
    assert reason.startswith(f"plugin {directory / 'broken.py'}: SyntaxError: ")
    assert "\n" not in reason and info.value.origin == str(directory / "broken.py")


@pytest.mark.parametrize(("source", "expected"), [
    ("raise RuntimeError('no database')\n", "RuntimeError: no database"),
    ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    (agent_source("bad", extra="concurrency = -1"), "ValueError: agent bad: concurrency must be an integer >= 0"),
    (agent_source("has.dot"), "agent name 'has.dot' must be letters, digits"),
])
def test_plugin_failures_name_the_file(tmp_path: Path, source: str, expected: str) -> None:
    directory = plugin_dir(tmp_path, {"p.py": source})
    with pytest.raises(PluginError) as info:
        load_agents([directory], group="nmc.test.nothing")
    assert str(directory / "p.py") in info.value.reason and expected in info.value.reason


def test_missing_plugin_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="plugin directory not found: .*nowhere"):
        load_agents([tmp_path / "nowhere"], group="nmc.test.nothing")


def test_builtin_is_not_replaced_without_override(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, {"mine.py": agent_source("rpcutil", cls="MyRpcUtil")})
    with pytest.raises(PluginError) as info:
        load_agents([directory], group="nmc.test.nothing")
    assert info.value.reason == (
        f"agent 'rpcutil' from {directory / 'mine.py'} conflicts with the builtin agent from "
        "nmc.services.agents.rpcutil:RpcUtil; set override = True in its class to replace it")


def test_override_replaces_with_a_warning(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    directory = plugin_dir(tmp_path, {"mine.py": agent_source("rpcutil", cls="MyRpcUtil", version="9.9.9",
                                                              extra="override = True")})
    with capture_logs() as logs:
        loaded = load_agents([directory], builtins=(RpcUtil,), group="nmc.test.nothing")
    assert names(loaded) == [("rpcutil", "plugin dir")] and loaded[0].cls.version == "9.9.9"
    assert loaded[0].cls is not RpcUtil
    assert [(e["event"], e["log_level"], e["agent"]) for e in logs] == [("agent_overridden", "warning", "rpcutil")]


def test_same_name_in_two_plugin_dirs_conflicts(tmp_path: Path) -> None:
    first = plugin_dir(tmp_path, {"a.py": agent_source("dup")}, "first")
    second = plugin_dir(tmp_path, {"b.py": agent_source("dup")}, "second")
    with pytest.raises(PluginError, match=f"agent 'dup' from {second / 'b.py'} conflicts with the plugin dir agent "
                                          f"from {first / 'a.py'}"):
        load_agents([first, second], group="nmc.test.nothing")


def test_entry_point_and_plugin_dir_conflict(site, tmp_path: Path) -> None:
    site("nmc_ep_dup", agent_source("dupe", cls="Dupe"), {"dupe": "nmc_ep_dup:Dupe"})
    directory = plugin_dir(tmp_path, {"dupe.py": agent_source("dupe")})
    with pytest.raises(PluginError, match="conflicts with the entry point agent from entry point dupe = "):
        load_agents([directory])
