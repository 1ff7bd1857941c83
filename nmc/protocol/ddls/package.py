"""The package agent's DDL: query, install, upgrade and remove one Debian package."""

from __future__ import annotations

from nmc.protocol.ddl import ActionSpec, AgentSpec, Aggregate, Input, Output
from nmc.protocol.regex import builtin_pattern

__all__ = ["CHANGE_TIMEOUT", "DDL", "PACKAGE_NAME", "PACKAGE_VERSION", "STATUS_TIMEOUT"]

# Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters, starting
# alphanumeric (so never an option); an optional :arch qualifier as dpkg and apt accept.
# RE2 (nmc.protocol.regex): $ matches only at the very end, so no trailing newline gets through.
PACKAGE_NAME = builtin_pattern(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")
# Debian policy 5.6.12: [epoch:]upstream[-revision], upstream starting with a digit.
PACKAGE_VERSION = builtin_pattern(r"^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$")

CHANGE_TIMEOUT = 300.0  # seconds an install/uninstall/update action may take
STATUS_TIMEOUT = 30.0

_PACKAGE = Input("package", "string", "Package name", optional=False, validation=PACKAGE_NAME, maxlength=128)
_VERSION = Input("version", "string", "Version to install (default: the candidate version)",
                 validation=PACKAGE_VERSION, maxlength=128)
_STATUS_OUTPUTS = (
    Output("package", "Package name", display_as="Package"),
    Output("status", "installed, absent, config-files, half-installed, ...", display_as="Status"),
    Output("version", "Installed version (empty when absent)", display_as="Version", default=""),
    Output("arch", "Architecture of the installed package", display_as="Arch", default=""),
)
_CHANGE_OUTPUTS = (
    *_STATUS_OUTPUTS,
    Output("exitcode", "Exit code of the package manager", display_as="Exit Code", type="integer"),
    Output("output", "Last lines of the package manager's output", display_as="Output", default=""),
)
_SUMMARIES = (Aggregate("summary", "status"), Aggregate("summary", "version"))

DDL = AgentSpec(
    name="package",
    description="Install, update, uninstall and query operating system packages",
    version="1.0.0",
    actions={spec.name: spec for spec in (
        ActionSpec("status", "The installed state and version of a package", inputs=(_PACKAGE,),
                   timeout=STATUS_TIMEOUT, outputs=_STATUS_OUTPUTS, aggregates=_SUMMARIES, readonly=True),
        ActionSpec("install", "Install a package, optionally a given version", inputs=(_PACKAGE, _VERSION),
                   timeout=CHANGE_TIMEOUT, outputs=_CHANGE_OUTPUTS, aggregates=_SUMMARIES),
        ActionSpec("uninstall", "Remove a package", inputs=(_PACKAGE,), timeout=CHANGE_TIMEOUT,
                   outputs=_CHANGE_OUTPUTS, aggregates=_SUMMARIES),
        ActionSpec("update", "Upgrade one installed package to its candidate version", inputs=(_PACKAGE,),
                   timeout=CHANGE_TIMEOUT, outputs=_CHANGE_OUTPUTS, aggregates=_SUMMARIES),
    )},
)
"""package: status (read-only), install, uninstall, update."""
