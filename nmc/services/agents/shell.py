"""The shell agent: run a command line with /bin/sh -c. DANGEROUS, and therefore off by default.

Whoever may call `shell.run` on a node can do anything the node's user can
(usually root). The agent is loaded on every node so its DDL is known, but
it refuses every request with Aborted unless the node's own configuration
says `plugin.shell.enabled = true`; a client cannot turn it on. Per-caller
control comes from the action-policy service on top of this switch, never
instead of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from nmc.protocol.ddls.shell import DDL
from nmc.protocol.status import Status
from nmc.services.agent import ActionFailed, ActionRequest, Agent
from nmc.services.agents._ddl import declared
from nmc.services.agents._proc import CommandError, run_command

__all__ = ["DEFAULT_MAX_OUTPUT", "DISABLED_MESSAGE", "Shell"]

DISABLED_MESSAGE = "the shell agent is disabled on this node (plugin.shell.enabled = false)"
DEFAULT_MAX_OUTPUT = 65536  # bytes kept of stdout and of stderr, each

_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off", ""}

log = structlog.get_logger("nmc.node")


class Shell(Agent):
    """Runs arbitrary command lines; refuses everything unless `plugin.shell.enabled` is true on the node."""

    name = DDL.name
    description = DDL.description
    version = DDL.version

    def _check_enabled(self) -> None:
        """Fail closed: anything but an explicit true keeps the agent disabled."""
        value = str(self.settings.get("enabled", "false")).strip().lower()
        if value in _TRUE:
            return
        if value in _FALSE:
            raise ActionFailed(DISABLED_MESSAGE, status=Status.ABORTED)
        raise ActionFailed(f"the shell agent is disabled on this node (plugin.shell.enabled = {value!r} is not"
                           " true or false)", status=Status.ABORTED)

    def _max_output(self) -> int:
        raw = str(self.settings.get("max_output", DEFAULT_MAX_OUTPUT)).strip()
        if not raw.isdigit() or int(raw) <= 0:
            raise ActionFailed(f"plugin.shell.max_output must be a positive number of bytes, got {raw!r}",
                               status=Status.ABORTED)
        return int(raw)

    @declared(DDL)
    async def run(self, req: ActionRequest) -> Mapping[str, Any]:
        """Run the command; a non-zero exit or a timeout answers Aborted with the same data."""
        self._check_enabled()
        command: str = req.data["command"]
        timeout = float(req.data.get("timeout", 30.0))
        if not timeout > 0:
            raise ActionFailed(f"timeout must be a positive number of seconds, got {timeout:g}",
                               status=Status.INVALID_DATA)
        cwd = req.data.get("cwd")
        log.info("shell_command", request_id=req.request_id, caller=req.caller, command=command, cwd=cwd,
                 timeout=timeout)
        try:
            done = await run_command(["/bin/sh", "-c", command], timeout=timeout, cwd=cwd,
                                     max_output=self._max_output(), keep="head")
        except CommandError as exc:
            raise ActionFailed(exc.reason, status=Status.ABORTED) from exc
        data = {"stdout": done.stdout, "stderr": done.stderr, "stdout_truncated": done.stdout_truncated,
                "stderr_truncated": done.stderr_truncated, "exitcode": done.exitcode,
                "duration": done.duration, "timed_out": done.timed_out}
        if done.timed_out:
            raise ActionFailed(f"command timed out after {timeout:g}s; its process group was killed",
                               status=Status.ABORTED, data=data)
        if done.exitcode != 0:
            raise ActionFailed(f"command exited with code {done.exitcode}", status=Status.ABORTED, data=data)
        return data
