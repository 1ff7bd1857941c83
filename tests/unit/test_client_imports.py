"""The client library and the everyday commands load no node daemon, agent code or fleet tooling.

Checked in a fresh interpreter (sys.modules after the imports), so a lazy import
elsewhere in the test session cannot hide an eager one here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nmc.ops.agents import ENTRY_POINT_GROUP, agent_ddls
from nmc.protocol.ddls import BUILTIN_DDLS, BUILTIN_ORIGINS

# The structlog set-up the commands share with the daemons lives in nmc.transport.logs: no part of
# nmc.ops.daemon is needed by a client command.
# Nor the web console's templates (Jinja2 is imported by `nmc serve console` only; aiohttp is kept out
# by the `nmc` entry point's mark, nmc.cli.main, not by these imports: nats-py imports it when it can).
FORBIDDEN = ("nmc.services", "nmc.ops.fleet", "nmc.ops.daemon", "nmc.ops.console", "jinja2")


def _loaded(*modules: str) -> list[str]:
    code = (f"import sys, json; import {', '.join(modules)}; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("modules", [("nmc.client", "nmc.client.session", "nmc.client.run", "nmc.client.fleet",
                                      "nmc.client.discovery", "nmc.client.batch", "nmc.client.runall"),
                                     ("nmc.protocol.ddls",),
                                     ("nmc.cli.fleet_cmds", "nmc.cli.puppet_cmd", "nmc.cli.report_cmds",
                                      "nmc.cli.plugin_cmd", "nmc.cli.common")])
def test_imports_no_daemon_code(modules: tuple[str, ...]):
    assert _loaded(*modules) == []


def test_builtin_agents_implement_their_ddls_exactly():
    from nmc.services.agents import BUILTIN_AGENTS
    from nmc.services.loader import ENTRY_POINT_GROUP as LOADER_GROUP

    assert [cls.spec() for cls in BUILTIN_AGENTS] == list(BUILTIN_DDLS)
    assert {cls.name: f"{cls.__module__}:{cls.__qualname__}" for cls in BUILTIN_AGENTS} == BUILTIN_ORIGINS
    assert ENTRY_POINT_GROUP == LOADER_GROUP


def test_the_command_knows_the_builtins_without_loading_them():
    known = agent_ddls(())
    assert [a.name for a in known.values()] == [d.name for d in BUILTIN_DDLS]
    assert {a.source for a in known.values()} == {"builtin"}
