"""The puppet agent's DDL, and the two things both ends of it share: Puppet's tag syntax and run-age wording.

`nmc puppet` checks `--tags` with TAGS_PATTERN before sending (the node checks
the same pattern as the input's validation), and writes run ages with
describe_age as the agent writes them in its status message.
"""

from __future__ import annotations

from nmc import __version__
from nmc.protocol.ddl import ActionSpec, AgentSpec, Aggregate, Input, Output
from nmc.protocol.regex import builtin_pattern

__all__ = ["DDL", "TAGS_PATTERN", "describe_age"]

# Puppet's tag syntax (Puppet::Util::Tagging: a word character, then word characters, '.', ':' or '-'),
# as a comma-separated list.
_TAG = r"\w[\w.:-]*"
TAGS_PATTERN = builtin_pattern(rf"^\s*{_TAG}(\s*,\s*{_TAG})*\s*$")
_NO_CONTROL = builtin_pattern(r"^[^\x00-\x1f\x7f]*$")


def describe_age(seconds: float) -> str:
    """`130` -> "2 minutes 10 seconds" (MCollective's wording for run ages)."""
    left = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, left = divmod(left, size)
        if count or (unit == "second" and not parts):
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts[:2])


_STATUS_OUTPUTS = (
    Output("status", "Puppet's state: applying a catalog, idling, disabled or stopped", "Status", type="string"),
    Output("applying", "A catalog run is in progress", "Applying", default=False, type="boolean"),
    Output("enabled", "Runs are allowed (no agent_disabled.lock)", "Enabled", default=False, type="boolean"),
    Output("idling", "The puppet agent daemon is running and not applying", "Idling", default=False, type="boolean"),
    Output("daemon_present", "A puppet agent daemon is running", "Daemon Running", default=False, type="boolean"),
    Output("disable_message", "Why Puppet was disabled", "Lock Message", default="", type="string"),
    Output("pid", "PID of the run in progress", "Run PID"),
    Output("lastrun", "Epoch seconds of the last completed run (0: never)", "Last Run", default=0, type="integer"),
    Output("since_lastrun", "Seconds since the last completed run", "Since Last Run"),
    Output("message", "Status in words", "Message", default="", type="string"),
    Output("changed_resources", "Resources changed by the last run", "Changed Resources", default=0, type="integer"),
    Output("failed_resources", "Resources that failed in the last run", "Failed Resources", default=0, type="integer"),
    Output("total_resources", "Resources in the last run's catalog", "Total Resources", default=0, type="integer"),
)

_RUNONCE = ActionSpec("runonce", "Start a Puppet run in the background (returns at once)", inputs=(
    Input("noop", "boolean", "Do a no-op run: report what would change, change nothing", default=False),
    Input("tags", "string", "Apply only resources with these tags (comma-separated)", validation=TAGS_PATTERN,
          maxlength=1024),
    Input("splay", "boolean", "Wait a random time up to splaylimit seconds before starting", default=False),
    Input("splaylimit", "integer", "Longest splay in seconds (default: plugin.puppet.splaylimit)"),
    Input("force", "boolean", "Start now: no splay, whatever splay says", default=False),
), outputs=(
    Output("summary", "What was done", "Summary", default="", type="string"),
    Output("initiated_at", "Epoch seconds when the run was requested", "Initiated at", default=0, type="integer"),
    Output("pid", "PID of the started run (none while splaying)", "PID"),
    Output("splay", "Seconds the run waits before starting", "Splay", default=0, type="float"),
    Output("lastrun", "Last completed run before this one (epoch seconds)", "Previous Run", default=0,
           type="integer"),
))

_LAST_RUN_SUMMARY = ActionSpec("last_run_summary", "The last run's summary (last_run_summary.yaml) with derived figures",
                               outputs=(
    Output("lastrun", "Epoch seconds of the last run", "Last Run", default=0, type="integer"),
    Output("since_lastrun", "Seconds since the last run", "Since Last Run"),
    Output("config_version", "Catalog version applied", "Config Version", default="", type="string"),
    Output("puppet_version", "Puppet version", "Puppet Version", default="", type="string"),
    Output("changed_resources", "Resources changed", "Changed Resources", default=0, type="integer"),
    Output("failed_resources", "Resources failed", "Failed Resources", default=0, type="integer"),
    Output("out_of_sync_resources", "Resources out of sync", "Out of Sync Resources", default=0, type="integer"),
    Output("corrected_resources", "Resources corrected (drift)", "Corrected Resources", default=0, type="integer"),
    Output("total_resources", "Resources managed", "Total Resources", default=0, type="integer"),
    Output("total_time", "Seconds the run took", "Total Time", default=0.0, type="float"),
    Output("config_retrieval_time", "Seconds spent getting the catalog", "Config Retrieval Time",
           default=0.0, type="float"),
    Output("failed_events", "Events that failed", "Failed Events", default=0, type="integer"),
    Output("resources", "The summary's resources section", "Resources", default={}),
    Output("time", "The summary's time section", "Time", default={}),
    Output("changes", "The summary's changes section", "Changes", default={}),
    Output("events", "The summary's events section", "Events", default={}),
    Output("version", "The summary's version section", "Version", default={}),
), aggregates=(
    Aggregate("average", "total_time", format="%.2f"),
    Aggregate("sum", "failed_resources"),
    Aggregate("summary", "config_version"),
), readonly=True)

DDL = AgentSpec(
    name="puppet",
    description="Run Puppet, enable or disable it, and report its state (MCollective's puppet agent)",
    version=__version__,
    actions={spec.name: spec for spec in (
        _RUNONCE,
        ActionSpec("status", "Puppet's state: applying, enabled, last run", outputs=_STATUS_OUTPUTS, aggregates=(
            Aggregate("summary", "status"),
            Aggregate("boolean_summary", "enabled", labels=("enabled", "disabled")),
        ), readonly=True),
        ActionSpec("enable", "Allow Puppet runs again (remove agent_disabled.lock)", outputs=_STATUS_OUTPUTS[:6]),
        ActionSpec("disable", "Stop Puppet from running (write agent_disabled.lock)", inputs=(
            Input("message", "string", "Why; default: 'Disabled via nmc by <caller>'", validation=_NO_CONTROL,
                  maxlength=1024),
        ), outputs=_STATUS_OUTPUTS[:6]),
        _LAST_RUN_SUMMARY,
    )},
)
"""puppet: runonce, status, enable, disable, last_run_summary."""
