"""The shell agent's DDL: run a command line with /bin/sh -c (the agent refuses unless the node enables it)."""

from __future__ import annotations

from nmc.protocol.ddl import ActionSpec, AgentSpec, Aggregate, Input, Output
from nmc.protocol.regex import builtin_pattern

__all__ = ["DDL"]

DDL = AgentSpec(
    name="shell",
    description="Run shell commands (disabled unless plugin.shell.enabled = true on the node)",
    version="1.0.0",
    actions={spec.name: spec for spec in (
        ActionSpec("run", "Run a command line with /bin/sh -c (DANGEROUS; disabled unless the node enables it)",
                   inputs=(
            Input("command", "string", "The command line, run by /bin/sh -c", optional=False, validation=builtin_pattern(r"\S"),
                  maxlength=4096),
            Input("timeout", "float", "Seconds before the command's process group is killed", default=30.0),
            Input("cwd", "string", "Absolute directory to run in (default: the node's)", validation=builtin_pattern(r"^/"),
                  maxlength=4096),
        ), outputs=(
            Output("stdout", "Standard output (capped at plugin.shell.max_output bytes)", display_as="Output",
                   default=""),
            Output("stderr", "Standard error (capped likewise)", display_as="Error Output", default=""),
            Output("stdout_truncated", "True when stdout was longer than the cap", display_as="Output Truncated",
                   type="boolean", default=False),
            Output("stderr_truncated", "True when stderr was longer than the cap", display_as="Error Truncated",
                   type="boolean", default=False),
            Output("exitcode", "Exit code; negative: killed by that signal", display_as="Exit Code",
                   type="integer"),
            Output("duration", "Seconds the command ran", display_as="Duration", type="float"),
            Output("timed_out", "True when the time limit killed the command", display_as="Timed Out",
                   type="boolean", default=False),
        ), aggregates=(Aggregate("summary", "exitcode"),)),
    )},
)
"""shell: run (not read-only)."""
