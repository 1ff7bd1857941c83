"""`nmc` imports a sub-command only when it runs; the listing it shows without importing stays true."""

from __future__ import annotations

import subprocess
import sys

import click

from nmc.cli.lazy import LazyGroup
from nmc.cli.main import cli


def _groups() -> list[tuple[str, LazyGroup]]:
    ctx = click.Context(cli)
    ops = cli.get_command(ctx, "ops")
    assert isinstance(ops, LazyGroup)
    return [("nmc", cli), ("nmc ops", ops)]  # type: ignore[list-item]


def test_every_lazy_command_loads_and_its_listed_help_is_its_own():
    for path, group in _groups():
        for name, lazy in group.lazy.items():
            command = lazy.load()
            if command.hidden:
                assert lazy.short_help.startswith("(hidden)"), f"{path} {name}"
                continue
            assert lazy.short_help == command.get_short_help_str(80), f"{path} {name}: update nmc/cli/main.py"


def test_version_and_help_import_no_command_module():
    code = ("import sys; from nmc.cli.main import cli; import click; "
            "sys.argv=['nmc', '--help']; "
            "exec('try:\\n cli.main(prog_name=\"nmc\")\\nexcept SystemExit: pass'); "
            "print(sorted(m for m in sys.modules if m.startswith(('nats', 'cryptography', 'nmc.cli.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = out.strip().splitlines()[-1]
    assert "nats" not in loaded and "cryptography" not in loaded, loaded
    assert "nmc.cli.fleet_cmds" not in loaded and "nmc.cli.audit_cmd" not in loaded, loaded
