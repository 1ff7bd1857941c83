"""docs/agents.md: its worked example is the agent the tests run, and its DDL is what `nmc plugin ddl` prints.

The `hello` agent of the guide is tests/integration/plugins/hello.py, which the integration tests
load from a plugin directory on real nodes and in the client (test_agent_plugins.py,
test_cli_rpc_plugins.py). Here: the guide's code is that file, byte for byte (less its module
docstring), the JSON the guide shows is what the CLI prints for it, and the guide's smaller
`uptime` example loads as a plugin.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from nmc.services.loader import load_agents
from tests.docs.doccommands import ROOT, code_blocks

AGENTS_MD = ROOT / "docs" / "agents.md"
HELLO = ROOT / "tests" / "integration" / "plugins" / "hello.py"


def _blocks(lang: str) -> list[str]:
    return ["\n".join(text for _, text in body) + "\n" for found, body in code_blocks(AGENTS_MD) if found == lang]


def _without_module_docstring(source: str) -> str:
    tree = ast.parse(source)
    first = tree.body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant), "hello.py starts with its docstring"
    return "\n".join(source.splitlines()[first.end_lineno:]).lstrip("\n") + "\n"


def test_the_worked_example_is_the_tested_plugin() -> None:
    hello = [b for b in _blocks("python") if "class Hello(Agent)" in b]
    assert len(hello) == 1
    assert hello[0] == _without_module_docstring(HELLO.read_text(encoding="utf-8"))


def test_the_ddl_shown_is_what_nmc_plugin_ddl_prints(tmp_path: Path) -> None:
    cfg = tmp_path / "client.cfg"
    cfg.write_text(f"plugindir = {HELLO.parent}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NMC_")} | {"NMC_CONFIG": str(cfg),
                                                                              "HOME": str(tmp_path)}
    ran = subprocess.run([sys.executable, "-m", "nmc", "plugin", "ddl", "hello"], check=False, capture_output=True, text=True,
                         env=env, timeout=60)
    assert ran.returncode == 0, ran.stderr
    shown = [json.loads(b) for b in _blocks("json") if '"agent": "hello"' in b]
    assert shown == [json.loads(ran.stdout)]


def test_the_uptime_example_loads_as_a_plugin(tmp_path: Path) -> None:
    uptime = [b for b in _blocks("python") if "class Uptime(Agent)" in b]
    assert len(uptime) == 1
    (tmp_path / "uptime.py").write_text(uptime[0], encoding="utf-8")
    loaded = {a.cls.name: a for a in load_agents([tmp_path])}
    spec = loaded["uptime"].cls
    assert (spec.version, spec.description) == ("1.0.0", "How long the node has been up")
    assert loaded["uptime"].source == "plugin dir"
