"""The service agent: status, start, stop and restart one system service (MCollective's service agent).

The backend is systemctl when systemd runs the host (/run/systemd/system
exists), else the SysV `service` command; `plugin.service.backend` forces
one, and `plugin.service.<action>_command` replaces any single command with
an argv template using `{service}`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from nmc.protocol.ddls.service import CHANGE_TIMEOUT, DDL
from nmc.protocol.status import Status
from nmc.services.agent import ActionFailed, ActionRequest, Agent
from nmc.services.agents._ddl import declared
from nmc.services.agents._proc import CommandError, Completed, build_argv, run_command

__all__ = ["BACKENDS", "Service", "choose_backend", "service_state"]

BACKENDS: Mapping[str, Mapping[str, str]] = {
    "systemctl": {
        "status_command": "systemctl is-active {service}",
        "start_command": "systemctl start {service}",
        "stop_command": "systemctl stop {service}",
        "restart_command": "systemctl restart {service}",
    },
    "service": {
        "status_command": "service {service} status",
        "start_command": "service {service} start",
        "stop_command": "service {service} stop",
        "restart_command": "service {service} restart",
    },
}
"""Command templates of each backend."""

_SYSTEMD_MARKER = "/run/systemd/system"  # what sd_booted() checks: systemd is PID 1
_UNKNOWN = ("unrecognized service", "could not be found")




def choose_backend(setting: str, systemd_marker: str = _SYSTEMD_MARKER) -> str:
    """"systemctl" or "service" for a `plugin.service.backend` value (auto: is systemd PID 1?)."""
    choice = (setting or "auto").strip().lower()
    if choice == "auto":
        return "systemctl" if os.path.isdir(systemd_marker) else "service"
    if choice not in BACKENDS:
        raise ValueError(f"plugin.service.backend must be auto, systemctl or service, got {setting!r}")
    return choice


def service_state(done: Completed) -> str:
    """running / stopped / unknown from a status command (LSB exit codes; systemctl is-active exits 0 if active)."""
    text = f"{done.stdout}\n{done.stderr}".lower()
    if done.exitcode == 0:
        return "running"
    if done.exitcode == 4 or any(marker in text for marker in _UNKNOWN):
        return "unknown"  # LSB 4: program or service status is unknown (no such service)
    return "stopped"


def _last_line(done: Completed) -> str:
    lines = [line.strip() for line in f"{done.stdout}\n{done.stderr}".splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.exitcode}"


class Service(Agent):
    """Start, stop, restart and query system services through systemctl or service."""

    name = DDL.name
    description = DDL.description
    version = DDL.version

    _backend: str | None = None

    def backend(self) -> str:
        """The backend this node uses, decided once (the init system does not change under a running node)."""
        if self._backend is None:
            try:
                self._backend = choose_backend(self.settings.get("backend", "auto"))
            except ValueError as exc:
                raise ActionFailed(str(exc), status=Status.ABORTED) from exc
        return self._backend

    def argv(self, command: str, service: str) -> list[str]:
        """The argv for `command` (status/start/stop/restart) on `service`, from settings or the backend."""
        key = f"{command}_command"
        template = self.settings.get(key) or BACKENDS[self.backend()][key]
        try:
            return build_argv(template, {"service": service})
        except ValueError as exc:
            raise ActionFailed(f"plugin.service.{key}: {exc}", status=Status.ABORTED) from exc

    async def _run(self, command: str, service: str) -> Completed:
        try:
            return await run_command(self.argv(command, service), timeout=CHANGE_TIMEOUT - 10, keep="tail",
                                     max_output=16384)
        except CommandError as exc:
            raise ActionFailed(exc.reason, status=Status.ABORTED) from exc

    async def _status(self, service: str) -> dict[str, Any]:
        state = service_state(await self._run("status", service))
        if state == "unknown":
            raise ActionFailed(f"unknown service {service!r}", status=Status.ABORTED,
                               data={"service": service, "status": state})
        return {"service": service, "status": state}

    async def _change(self, command: str, service: str) -> Mapping[str, Any]:
        done = await self._run(command, service)
        tail = done.tail()
        try:
            state = await self._status(service)
        except ActionFailed as exc:
            state = {"service": service, "status": exc.data.get("status", "unknown")}
        data = {**state, "exitcode": done.exitcode, "output": tail}
        if done.timed_out:
            raise ActionFailed(f"{command} of {service} did not finish within {CHANGE_TIMEOUT - 10:g}s and was killed",
                               status=Status.ABORTED, data=data)
        if done.exitcode != 0:
            raise ActionFailed(f"could not {command} {service}: {_last_line(done)}", status=Status.ABORTED,
                               data=data)
        return data

    @declared(DDL)
    async def status(self, req: ActionRequest) -> Mapping[str, Any]:
        """{service, status: running|stopped}; Aborted for a service the node does not know."""
        return await self._status(req.data["service"])

    @declared(DDL)
    async def start(self, req: ActionRequest) -> Mapping[str, Any]:
        """Start the service, then report its status."""
        return await self._change("start", req.data["service"])

    @declared(DDL)
    async def stop(self, req: ActionRequest) -> Mapping[str, Any]:
        """Stop the service, then report its status."""
        return await self._change("stop", req.data["service"])

    @declared(DDL)
    async def restart(self, req: ActionRequest) -> Mapping[str, Any]:
        """Restart the service, then report its status."""
        return await self._change("restart", req.data["service"])
