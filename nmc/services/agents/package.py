"""The package agent: query, install, upgrade and remove one Debian package (MCollective's package agent).

Commands are argv templates from the node's settings (`plugin.package.*`),
split like a shell would split them but never run through one; the package
name and version are validated by the DDL before they can reach argv, and a
placeholder always fills exactly one argument.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from nmc.protocol.ddls.package import CHANGE_TIMEOUT, DDL, STATUS_TIMEOUT
from nmc.protocol.status import Status
from nmc.services.agent import ActionFailed, ActionRequest, Agent
from nmc.services.agents._proc import (
    CommandError,
    Completed,
    build_argv,
    run_command,
    uses_placeholder,
)
from nmc.services.agents._ddl import declared

__all__ = ["DEFAULT_COMMANDS", "Package", "error_line", "parse_status"]

DEFAULT_COMMANDS: Mapping[str, str] = {
    "install_command": "apt-get install -y {package}",
    "uninstall_command": "apt-get remove -y {package}",
    "update_command": "apt-get install -y --only-upgrade {package}",
    "status_command": r"dpkg-query -W -f='${Status}\t${Version}\t${Architecture}\n' {package}",
}
"""Command templates used when `plugin.package.<key>` is not set."""

_ERROR = re.compile(r"^(E:|Err:|dpkg(-deb|-query)?: error|error\b)", re.IGNORECASE)


def parse_status(package: str, exitcode: int, stdout: str) -> dict[str, str]:
    """dpkg-query's `Status<TAB>Version<TAB>Architecture` line as {package, status, version, arch}.

    "install ok installed" -> installed; not known to dpkg, or known but
    not-installed -> absent; other states (config-files, half-installed, ...)
    are passed through. Raises ValueError for output it cannot read.
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    if exitcode == 1 and not lines:  # dpkg-query: no packages found matching NAME
        return {"package": package, "status": "absent", "version": "", "arch": ""}
    if exitcode != 0 or not lines:
        raise ValueError(f"status command exited {exitcode} with {stdout.strip()[:200]!r}")
    fields = lines[0].split("\t")
    words = fields[0].split()
    if len(words) != 3:
        raise ValueError(f"unexpected status line {lines[0][:200]!r}")
    state = "absent" if words[2] == "not-installed" else words[2]
    version = fields[1] if len(fields) > 1 and state != "absent" else ""
    arch = fields[2] if len(fields) > 2 and state != "absent" else ""
    return {"package": package, "status": state, "version": version, "arch": arch}


def error_line(done: Completed) -> str:
    """The package manager's last error line (E: ..., dpkg: error ...), else its last line."""
    lines = [line.strip() for line in f"{done.stdout}\n{done.stderr}".splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR.match(line)]
    if errors:
        return errors[-1]
    return lines[-1] if lines else f"exit code {done.exitcode}"


class Package(Agent):
    """Install, upgrade, remove and query packages with apt/dpkg (or configured commands)."""

    name = DDL.name
    description = DDL.description
    version = DDL.version
    concurrency: ClassVar[int] = 1  # the node runs one action of this agent at a time: dpkg has one lock

    def _command(self, key: str) -> str:
        return self.settings.get(key) or DEFAULT_COMMANDS[key]

    def _argv(self, key: str, values: Mapping[str, str | None]) -> list[str]:
        try:
            return build_argv(self._command(key), values)
        except ValueError as exc:
            raise ActionFailed(f"plugin.package.{key}: {exc}", status=Status.ABORTED) from exc

    async def _run(self, argv: list[str], timeout: float, *, merge_stderr: bool = True) -> Completed:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            return await run_command(argv, timeout=timeout, env=env, merge_stderr=merge_stderr, keep="tail",
                                     max_output=16384)
        except CommandError as exc:
            raise ActionFailed(exc.reason, status=Status.ABORTED) from exc

    async def _status(self, package: str) -> dict[str, str]:
        done = await self._run(self._argv("status_command", {"package": package}), STATUS_TIMEOUT - 5,
                               merge_stderr=False)
        try:
            return parse_status(package, done.exitcode, done.stdout)
        except ValueError as exc:
            why = f"{exc}; {done.stderr.strip().splitlines()[-1]}" if done.stderr.strip() else str(exc)
            raise ActionFailed(f"cannot read the status of {package}: {why}", status=Status.ABORTED,
                               data={"package": package, "status": "unknown"}) from exc

    async def _change(self, key: str, package: str, values: Mapping[str, str | None]) -> Mapping[str, Any]:
        """Run one change command, then report the package's status, exit code and output tail."""
        argv = self._argv(key, values)
        done = await self._run(argv, CHANGE_TIMEOUT - 10)
        data = {"exitcode": done.exitcode, "output": done.tail()}
        try:
            data = {**await self._status(package), **data}
        except ActionFailed as exc:
            if done.exitcode == 0 and not done.timed_out:
                raise ActionFailed(exc.message, status=exc.status, data={**exc.data, **data}) from exc
            data = {**exc.data, **data}  # the change's own failure is the better message
        if done.timed_out:
            raise ActionFailed(f"{argv[0]} did not finish within {CHANGE_TIMEOUT - 10:g}s and was killed",
                               status=Status.ABORTED, data=data)
        if done.exitcode != 0:
            raise ActionFailed(error_line(done), status=Status.ABORTED, data=data)
        return data

    @declared(DDL)
    async def status(self, req: ActionRequest) -> Mapping[str, Any]:
        """{package, status, version, arch} from dpkg-query."""
        return await self._status(req.data["package"])

    @declared(DDL)
    async def install(self, req: ActionRequest) -> Mapping[str, Any]:
        """apt-get install -y NAME (NAME=VERSION with a version), or the configured install_command."""
        package, version = req.data["package"], req.data.get("version")
        values: dict[str, str | None] = {"package": package, "version": version}
        if version and not uses_placeholder(self._command("install_command"), "version"):
            values["package"] = f"{package}={version}"  # apt's way of asking for one version
        return await self._change("install_command", package, values)

    @declared(DDL)
    async def uninstall(self, req: ActionRequest) -> Mapping[str, Any]:
        """apt-get remove -y NAME, or the configured uninstall_command."""
        return await self._change("uninstall_command", req.data["package"], {"package": req.data["package"]})

    @declared(DDL)
    async def update(self, req: ActionRequest) -> Mapping[str, Any]:
        """apt-get install -y --only-upgrade NAME, or the configured update_command."""
        return await self._change("update_command", req.data["package"], {"package": req.data["package"]})
