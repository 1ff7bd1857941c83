"""The puppet agent: start Puppet runs, enable and disable Puppet, report its state (MCollective's puppet agent).

A run is started in the background and the request answers at once, as in
MCollective: waiting for runs is the client's business (`nmc puppet runall`,
`nmc puppet runonce --batch`), which polls `status`. Everything the agent
reports comes from Puppet's own files (see `puppetstate`), and it writes the
run lock for the runs it starts, so `puppet apply` runs (which take no lock
of their own) look exactly like agent runs to `status`, to a later
`runonce` and to `puppet agent` itself.

Settings (`plugin.puppet.*` in server.cfg): `command`, `statedir`,
`summary`, `pidfile`, `splaylimit`; docs/puppet.md describes them.
"""

from __future__ import annotations

import asyncio
import random
import shlex
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import structlog

from nmc.protocol.ddls.puppet import DDL, describe_age
from nmc.protocol.status import Status
from nmc.services.agent import ActionFailed, ActionRequest, Agent, NodeContext
from nmc.services.agents import puppetstate
from nmc.services.agents._ddl import declared
from nmc.services.agents._proc import program_missing
from nmc.services.agents.puppetstate import (
    PuppetSettings,
    PuppetSettingsError,
    PuppetState,
    PuppetStateError,
)

__all__ = ["INSTALL_HINT", "Puppet", "not_started", "run_argv", "run_event_data"]

log = structlog.get_logger("nmc.puppet")

APPLYING, IDLING, DISABLED, STOPPED = "applying a catalog", "idling", "disabled", "stopped"
INSTALL_HINT = "install Puppet (Debian, Ubuntu: apt-get install puppet) or set plugin.puppet.command"


def run_argv(command: tuple[str, ...], *, noop: bool = False, tags: str | None = None) -> list[str]:
    """The configured command plus `--noop` and `--tags a,b` (both `puppet agent` and `puppet apply` take them)."""
    argv = list(command)
    if noop:
        argv.append("--noop")
    names = [t.strip() for t in (tags or "").split(",") if t.strip()]
    if names:
        argv += ["--tags", ",".join(names)]
    return argv


def not_started(argv: list[str], exc: OSError) -> str:
    """Why a run could not start, in one short line: the program, not the whole (long) command line."""
    if program_missing(argv, exc):
        return f"`{argv[0]}` command not found on this node: {INSTALL_HINT}"
    return f"cannot start {argv[0]}: {exc.strerror or exc}"


def _status_text(state: PuppetState) -> str:
    """MCollective's order: a run in progress shows even when Puppet was disabled during it."""
    if state.applying:
        return APPLYING
    if state.disabled:
        return DISABLED
    return IDLING if state.daemon_pid is not None else STOPPED


def _resources(summary: Mapping[str, Any] | None) -> dict[str, int]:
    res = (summary or {}).get("resources") or {}
    return {f"{key}_resources": int(res.get(key) or 0)
            for key in ("changed", "failed", "total", "out_of_sync", "corrective_change")}


def run_event_data(exitcode: int, summary: Mapping[str, Any] | None, seconds: float,
                   began: float) -> dict[str, Any]:
    """The `puppet_run` event's data for a run that ended with `exitcode` after `seconds` (docs/events.md).

    The resource counts come from last_run_summary.yaml only when Puppet wrote it during
    this run (its time.last_run is not before `began`, epoch seconds); `summary` says so.
    `status` is "failed" when the command failed (exit code other than 0 or 2, Puppet's
    "changes applied" under --detailed-exitcodes; a signal is negative) or the summary
    counts failed resources or failure events, "ok" otherwise.
    """
    last_run = _number(_section(summary or {}, "time").get("last_run"))
    fresh = summary is not None and last_run >= int(began)
    res = _section(summary or {}, "resources") if fresh else {}
    failed = int(_number(res.get("failed"))) + int(_number(res.get("failed_to_restart")))
    failures = int(_number(_section(summary or {}, "events").get("failure"))) if fresh else 0
    ok = exitcode in (0, 2) and failed == 0 and failures == 0
    return {"status": "ok" if ok else "failed", "exitcode": exitcode, "summary": fresh,
            "changed_resources": int(_number(res.get("changed"))), "failed_resources": failed,
            "duration_s": seconds}


def _status_data(state: PuppetState, now: float) -> dict[str, Any]:
    text = _status_text(state)
    lastrun = state.lastrun
    since = int(now - lastrun) if lastrun else None
    ran = f"last completed run {describe_age(since)} ago" if since is not None else "never completed a run"
    shown = f"disabled: '{state.disable_message}'" if text == DISABLED and state.disable_message else text
    res = _resources(state.summary)
    return {
        "status": text, "applying": state.applying, "enabled": not state.disabled,
        "idling": text == IDLING, "daemon_present": state.daemon_pid is not None,
        "disable_message": state.disable_message, "pid": state.run_pid,
        "lastrun": lastrun, "since_lastrun": since, "message": f"Currently {shown}; {ran}",
        "changed_resources": res["changed_resources"], "failed_resources": res["failed_resources"],
        "total_resources": res["total_resources"],
    }





class Puppet(Agent):
    """Run Puppet on demand, enable or disable it, and report its state from Puppet's own files."""

    name = DDL.name
    description = DDL.description
    version = DDL.version

    def __init__(self, node: NodeContext, settings: Mapping[str, str] | None = None) -> None:
        super().__init__(node, settings)
        self._config: PuppetSettings | None = None
        self._config_error = ""
        try:
            self._config = PuppetSettings.from_mapping(self.settings)
        except PuppetSettingsError as exc:
            # The node still serves its other agents; every puppet action names the broken key.
            self._config_error = str(exc)
            log.warning("puppet_misconfigured", identity=node.identity, reason=self._config_error)
        self._guard = asyncio.Lock()  # runonce/enable/disable decide and act without another request in between
        self._task: asyncio.Task[None] | None = None  # the started or scheduled run
        self._child: int | None = None  # PID of the run this agent started, while it runs
        self._start_at = 0.0  # when a splayed run is due (time.time())

    # -- helpers ---------------------------------------------------------------------------------------------

    def _cfg(self) -> PuppetSettings:
        if self._config is None:
            raise ActionFailed(f"the puppet agent is misconfigured: {self._config_error}", status=Status.UNKNOWN_ERROR)
        return self._config

    async def _state(self, cfg: PuppetSettings) -> PuppetState:
        try:
            return await asyncio.to_thread(puppetstate.read_state, cfg, self._child)
        except PuppetStateError as exc:
            raise ActionFailed(f"cannot read Puppet's state: {exc}", status=Status.UNKNOWN_ERROR) from exc

    def _scheduled(self) -> bool:
        return self._task is not None and not self._task.done() and self._child is None

    async def _spawn(self, cfg: PuppetSettings, argv: list[str]) -> asyncio.subprocess.Process:
        """Start the run in its own session (a node restart does not kill it) and take Puppet's run lock for it."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        except OSError as exc:
            log.warning("puppet_run_not_started", identity=self.node.identity, command=shlex.join(argv),
                        reason=exc.strerror or str(exc))
            raise ActionFailed(not_started(argv, exc), status=Status.UNKNOWN_ERROR) from exc
        self._child = proc.pid
        try:
            await asyncio.to_thread(puppetstate.write_run_lock, cfg, proc.pid)
        except PuppetStateError as exc:
            log.warning("puppet_lock_failed", identity=self.node.identity, pid=proc.pid, reason=str(exc))
        log.info("puppet_run_started", identity=self.node.identity, pid=proc.pid, command=shlex.join(argv))
        return proc

    async def _watch(self, cfg: PuppetSettings, proc: asyncio.subprocess.Process) -> None:
        """Wait for the run to end, give up the run lock (unless Puppet already removed it), say how it went."""
        started, began = time.monotonic(), time.time()
        code = await proc.wait()
        try:
            await asyncio.to_thread(puppetstate.clear_run_lock, cfg, proc.pid)
        except PuppetStateError as exc:
            log.warning("puppet_unlock_failed", identity=self.node.identity, pid=proc.pid, reason=str(exc))
        if self._child == proc.pid:  # a newer run may already have started once this one's PID was dead
            self._child = None
        seconds = round(time.monotonic() - started, 3)
        log.info("puppet_run_finished", identity=self.node.identity, pid=proc.pid, exitcode=code, seconds=seconds)
        try:
            summary = await asyncio.to_thread(puppetstate.read_summary, cfg.summary)
        except PuppetStateError as exc:
            log.warning("puppet_summary_unreadable", identity=self.node.identity, reason=str(exc))
            summary = None
        await self.emit_event("puppet_run", run_event_data(code, summary, seconds, began))

    async def _run_after(self, cfg: PuppetSettings, argv: list[str], delay: float) -> None:
        """The splayed run: wait, then start unless Puppet got disabled or busy meanwhile."""
        await asyncio.sleep(delay)  # the splay itself: spreading runs over time is the point
        async with self._guard:
            state = await asyncio.to_thread(puppetstate.read_state, cfg, None)
            if state.disabled or state.applying:
                log.info("puppet_splayed_run_skipped", identity=self.node.identity,
                         reason="disabled" if state.disabled else "already applying")
                return
            try:
                proc = await self._spawn(cfg, argv)
            except ActionFailed:
                return  # _spawn logged puppet_run_not_started with the whole command line
        await self._watch(cfg, proc)

    # -- actions ---------------------------------------------------------------------------------------------

    @declared(DDL)
    async def runonce(self, req: ActionRequest) -> Mapping[str, Any]:
        """Refuse when disabled or busy; otherwise start (or schedule) one run."""
        cfg = self._cfg()
        limit = req.data.get("splaylimit")
        if limit is not None and limit <= 0:
            raise ActionFailed("splaylimit must be a positive number of seconds", status=Status.INVALID_DATA)
        initiated = int(time.time())
        async with self._guard:
            state = await self._state(cfg)
            base = {"initiated_at": initiated, "lastrun": state.lastrun}
            if state.disabled:
                raise ActionFailed(f"Puppet is disabled: '{state.disable_message}'", data=base)
            if state.applying:
                raise ActionFailed("Puppet is currently applying a catalog, cannot run now",
                                   data={**base, "pid": state.run_pid})
            if self._scheduled():
                raise ActionFailed(f"A Puppet run is already scheduled to start in "
                                   f"{max(0.0, self._start_at - time.time()):.0f} s", data=base)
            argv = run_argv(cfg.command, noop=req.data["noop"], tags=req.data.get("tags"))
            splay_limit = cfg.splaylimit if limit is None else limit
            if req.data["splay"] and not req.data["force"] and splay_limit > 0:
                delay = random.uniform(0, splay_limit)
                self._start_at = time.time() + delay
                self._task = asyncio.create_task(self._run_after(cfg, argv, delay))
                return {**base, "splay": round(delay, 3), "pid": None,
                        "summary": f"Started a Puppet run using the '{shlex.join(argv)}' command after a splay of "
                                   f"{delay:.0f} s"}
            proc = await self._spawn(cfg, argv)
            self._task = asyncio.create_task(self._watch(cfg, proc))
        return {**base, "splay": 0.0, "pid": proc.pid,
                "summary": f"Started a Puppet run using the '{shlex.join(argv)}' command"}

    @declared(DDL)
    async def status(self, req: ActionRequest) -> Mapping[str, Any]:
        """What `puppet agent` would say about itself, from its lock files and last run summary."""
        cfg = self._cfg()
        return _status_data(await self._state(cfg), time.time())

    @declared(DDL)
    async def enable(self, req: ActionRequest) -> Mapping[str, Any]:
        """`puppet agent --enable`; enabling an enabled Puppet is refused, as in MCollective."""
        cfg = self._cfg()
        async with self._guard:
            try:
                removed = await asyncio.to_thread(puppetstate.enable, cfg)
            except PuppetStateError as exc:
                raise ActionFailed(f"Could not enable Puppet: {exc}", status=Status.UNKNOWN_ERROR) from exc
            data = _status_data(await self._state(cfg), time.time())
        if not removed:
            raise ActionFailed("Could not enable Puppet: Already enabled", data=data)
        log.info("puppet_enabled", identity=self.node.identity, caller=req.caller)
        return data

    @declared(DDL)
    async def disable(self, req: ActionRequest) -> Mapping[str, Any]:
        """`puppet agent --disable MESSAGE`; a run in progress finishes, later ones are refused."""
        cfg = self._cfg()
        message = req.data.get("message") or f"Disabled via nmc by {req.caller}"
        async with self._guard:
            try:
                written = await asyncio.to_thread(puppetstate.disable, cfg, message)
            except PuppetStateError as exc:
                raise ActionFailed(f"Could not disable Puppet: {exc}", status=Status.UNKNOWN_ERROR) from exc
            data = _status_data(await self._state(cfg), time.time())
        if not written:
            raise ActionFailed(f"Could not disable Puppet: Already disabled: '{data['disable_message']}'", data=data)
        log.info("puppet_disabled", identity=self.node.identity, caller=req.caller, reason=message)
        return data

    @declared(DDL)
    async def last_run_summary(self, req: ActionRequest) -> Mapping[str, Any]:
        """The parsed summary; Aborted when Puppet has not run yet."""
        cfg = self._cfg()
        try:
            summary = await asyncio.to_thread(puppetstate.read_summary, cfg.summary)
        except PuppetStateError as exc:
            raise ActionFailed(f"cannot read the last run summary: {exc}", status=Status.UNKNOWN_ERROR) from exc
        if summary is None:
            raise ActionFailed(f"Puppet has not run yet: no {cfg.summary}")
        return _summary_data(summary, time.time())


def _section(summary: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = summary.get(name)
    return dict(value) if isinstance(value, Mapping) else {}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _summary_data(summary: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The sections as Puppet wrote them, plus MCollective's derived figures."""
    times, version = _section(summary, "time"), _section(summary, "version")
    lastrun = int(_number(times.get("last_run")))
    res = _section(summary, "resources")
    return {
        "version": version, "resources": res, "time": times, "changes": _section(summary, "changes"),
        "events": _section(summary, "events"),
        "lastrun": lastrun, "since_lastrun": int(now - lastrun) if lastrun else None,
        "config_version": str(version.get("config") or ""), "puppet_version": str(version.get("puppet") or ""),
        "changed_resources": int(_number(res.get("changed"))), "failed_resources": int(_number(res.get("failed"))),
        "out_of_sync_resources": int(_number(res.get("out_of_sync"))),
        "corrected_resources": int(_number(res.get("corrective_change"))),
        "total_resources": int(_number(res.get("total"))),
        "total_time": round(_number(times.get("total")), 3),
        "config_retrieval_time": round(_number(times.get("config_retrieval")), 3),
        "failed_events": int(_number(_section(summary, "events").get("failure"))),
    }

