"""The service agent's DDL: status, start, stop and restart one system service."""

from __future__ import annotations

from nmc.protocol.ddl import ActionSpec, AgentSpec, Aggregate, Input, Output
from nmc.protocol.regex import builtin_pattern

__all__ = ["CHANGE_TIMEOUT", "DDL", "SERVICE_NAME"]

# systemd unit / init script names: no spaces, no shell characters, never starting with "-";
# RE2 (nmc.protocol.regex): $ matches only at the very end, so no trailing newline gets through.
SERVICE_NAME = builtin_pattern(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$")

CHANGE_TIMEOUT = 120.0  # seconds a start/stop/restart may take

_SERVICE = Input("service", "string", "Service name", optional=False, validation=SERVICE_NAME, maxlength=256)
_STATUS_OUTPUTS = (
    Output("service", "Service name", display_as="Service"),
    Output("status", "running or stopped", display_as="Service Status"),
)
_CHANGE_OUTPUTS = (
    *_STATUS_OUTPUTS,
    Output("exitcode", "Exit code of the command", display_as="Exit Code", type="integer"),
    Output("output", "Last lines of the command's output", display_as="Output", default=""),
)
_SUMMARY = (Aggregate("summary", "status"),)

DDL = AgentSpec(
    name="service",
    description="Start, stop, restart and query system services",
    version="1.0.0",
    actions={spec.name: spec for spec in (
        ActionSpec("status", "Whether a service is running", inputs=(_SERVICE,), timeout=60.0,
                   outputs=_STATUS_OUTPUTS, aggregates=_SUMMARY, readonly=True),
        ActionSpec("start", "Start a service", inputs=(_SERVICE,), timeout=CHANGE_TIMEOUT, outputs=_CHANGE_OUTPUTS,
                   aggregates=_SUMMARY),
        ActionSpec("stop", "Stop a service", inputs=(_SERVICE,), timeout=CHANGE_TIMEOUT, outputs=_CHANGE_OUTPUTS,
                   aggregates=_SUMMARY),
        ActionSpec("restart", "Restart a service", inputs=(_SERVICE,), timeout=CHANGE_TIMEOUT,
                   outputs=_CHANGE_OUTPUTS, aggregates=_SUMMARY),
    )},
)
"""service: status (read-only), start, stop, restart."""
