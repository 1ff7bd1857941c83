"""Puppet runs that the client waits for: MCollective's `puppet runall N` and `puppet runonce --batch N`.

`puppet runonce` answers the moment a run starts, so a plain rpc (batched
or not) cannot keep Puppet's load down: every batch would "finish" at once.
These functions start runs and then poll `puppet status` of the nodes whose
runs count, until each one is idle again with a newer last run.

- `runall`: a sliding window. At most N nodes apply at once; the next idle
  node starts as soon as any run ends. A node found already applying (a cron
  run, an operator's) counts against N until it ends, then gets its own run.
- `run_in_batches`: fixed batches. The next batch starts when every run of
  this one ended (plus `batch_sleep`).

Neither stalls on one node: a node that does not answer is reported at once
(or after `lost_after` seconds of silence once started, freeing its slot),
and a run that takes longer than `run_timeout` is reported and its slot freed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nmc.client.fleet import FleetClient, NodeResult

__all__ = ["OUTCOMES", "NodeOutcome", "RunAllResult", "RunEvent", "run_in_batches", "runall"]

OUTCOMES = ("ok", "failed", "start_failed", "timed_out", "no_response")
_BUSY_MARK = "currently applying"  # runonce's refusal when a run is in progress


@dataclass(frozen=True)
class NodeOutcome:
    """How one node's run went. `outcome` is one of OUTCOMES; times are the client's epoch seconds."""

    identity: str
    outcome: str
    reason: str = ""
    started: float | None = None
    finished: float | None = None
    lastrun: int = 0  # the node's last completed run after ours (summary time.last_run)
    changed_resources: int = 0
    failed_resources: int = 0

    @property
    def ok(self) -> bool:
        """True when the run finished without failed resources."""
        return self.outcome == "ok"

    @property
    def duration(self) -> float | None:
        """Seconds from start to the poll that saw it finished."""
        return None if self.started is None or self.finished is None else self.finished - self.started


@dataclass(frozen=True)
class RunEvent:
    """Progress: `kind` is started, busy, idle, or an outcome; `applying` counts the runs in the window after it.

    `elapsed` is seconds since the runs began, on the same clock as RunAllResult.elapsed, so
    the last event is never later than the total.
    """

    kind: str
    identity: str
    applying: int
    message: str
    outcome: NodeOutcome | None = None
    elapsed: float = 0.0


@dataclass(frozen=True)
class RunAllResult:
    """Every node's outcome (sorted by identity) and the run's timings."""

    outcomes: tuple[NodeOutcome, ...]
    concurrency: int
    elapsed: float
    peak_applying: int  # the most runs nmc counted at once (its own bookkeeping, for the report)

    def by_outcome(self, outcome: str) -> tuple[NodeOutcome, ...]:
        """The nodes with this outcome."""
        return tuple(o for o in self.outcomes if o.outcome == outcome)

    @property
    def ok(self) -> bool:
        """True when every node ran and finished cleanly."""
        return all(o.ok for o in self.outcomes)


@dataclass
class _Run:
    started_mono: float
    started: float
    prev_lastrun: int
    last_answer: float


@dataclass
class _Runs:
    """The bookkeeping both strategies share: start, poll, finish."""

    fc: FleetClient
    filter_expr: str
    run_options: Mapping[str, Any]
    run_timeout: float
    lost_after: float
    status_timeout: float | None
    on_event: Callable[[RunEvent], None] | None
    job: str | None = None  # the job that keeps every runonce reply (nmc.client.jobs)
    started: float = field(default_factory=time.monotonic)  # when the runs began: events and the total count from it
    running: dict[str, _Run] = field(default_factory=dict)  # runs we started
    busy: dict[str, float] = field(default_factory=dict)  # runs we did not start, by when first seen (monotonic)
    busy_seen: dict[str, float] = field(default_factory=dict)  # last answer of a busy node (monotonic)
    outcomes: dict[str, NodeOutcome] = field(default_factory=dict)
    peak: int = 0

    @property
    def applying(self) -> int:
        """Runs that count against the window."""
        return len(self.running) + len(self.busy)

    def _emit(self, kind: str, name: str, message: str, outcome: NodeOutcome | None = None) -> None:
        self.peak = max(self.peak, self.applying)
        if self.on_event is not None:
            self.on_event(RunEvent(kind, name, self.applying, message, outcome,
                                   elapsed=time.monotonic() - self.started))

    def finish(self, name: str, outcome: str, reason: str, **fields: Any) -> None:
        """Record a node's outcome and free its slot."""
        run = self.running.pop(name, None)
        self.busy.pop(name, None)
        result = NodeOutcome(name, outcome, reason, started=run.started if run else None,
                             finished=time.time() if run else None, **fields)
        self.outcomes[name] = result
        self._emit(outcome, name, reason, result)

    async def status(self, names: Collection[str]) -> dict[str, NodeResult]:
        """`puppet status` of these nodes only (addressed one by one), by identity."""
        if not names:
            return {}
        result = await self.fc.call("puppet", "status", {}, filter_expr=self.filter_expr, expect=sorted(names),
                                    direct=True, timeout=self.status_timeout)
        return {r.identity: r for r in result.results}

    def saw_busy(self, name: str) -> None:
        """A run we did not start: it counts until it ends (or outlasts run_timeout)."""
        now = time.monotonic()
        self.busy.setdefault(name, now)
        self.busy_seen[name] = now
        self._emit("busy", name, "already applying a catalog: waiting for that run to end")

    async def start(self, name: str) -> str:
        """Ask one node for a run now: 'started', 'busy' (counted, not started) or 'done' (an outcome)."""
        data = {**self.run_options, "force": True, "splay": False}
        result = await self.fc.call("puppet", "runonce", data, filter_expr=self.filter_expr, expect=[name],
                                    direct=True, timeout=self.status_timeout, job=self.job)
        reply = result.results[0] if result.results else None
        if reply is None:
            self.finish(name, "no_response", "did not answer puppet runonce")
            return "done"
        if reply.ok:
            now = time.monotonic()
            self.running[name] = _Run(now, time.time(), int(reply.data.get("lastrun") or 0), now)
            self._emit("started", name, "started a Puppet run")
            return "started"
        if _BUSY_MARK in reply.message:
            self.saw_busy(name)
            return "busy"
        self.finish(name, "start_failed", reply.message)
        return "done"

    async def poll(self) -> list[str]:
        """Ask the counted nodes how their runs go; returns the busy nodes that became idle."""
        replies = await self.status(set(self.running) | set(self.busy))
        now = time.monotonic()
        idle = []
        for name, run in list(self.running.items()):
            reply = replies.get(name)
            if reply is None or not reply.ok:
                if now - run.last_answer > self.lost_after:
                    why = reply.message if reply is not None else "no answer"
                    self.finish(name, "no_response", f"stopped answering puppet status ({why}) for "
                                                     f"{now - run.last_answer:.0f} s while applying")
                elif now - run.started_mono > self.run_timeout:
                    self.finish(name, "timed_out", f"still applying after {self.run_timeout:g} s")
                continue
            run.last_answer = now
            self._check_run(name, run, reply.data, now)
        for name, first in list(self.busy.items()):
            reply = replies.get(name)
            if reply is not None and reply.ok and not reply.data.get("applying"):
                del self.busy[name]
                idle.append(name)
                self._emit("idle", name, "the run nmc did not start has ended")
            elif now - first > self.run_timeout:
                self.finish(name, "timed_out", f"a run nmc did not start was still applying after "
                                               f"{self.run_timeout:g} s")
            elif reply is None and now - self.busy_seen.get(name, first) > self.lost_after:
                self.finish(name, "no_response", "stopped answering puppet status while applying")
            elif reply is not None:
                self.busy_seen[name] = now
        return idle

    def _check_run(self, name: str, run: _Run, data: Mapping[str, Any], now: float) -> None:
        if data.get("applying"):
            if now - run.started_mono > self.run_timeout:
                self.finish(name, "timed_out", f"still applying after {self.run_timeout:g} s")
            return
        lastrun = int(data.get("lastrun") or 0)
        fields = {"lastrun": lastrun, "changed_resources": int(data.get("changed_resources") or 0),
                  "failed_resources": int(data.get("failed_resources") or 0)}
        if lastrun <= run.prev_lastrun:
            self.finish(name, "failed", "the run ended without writing a new last run summary", **fields)
        elif fields["failed_resources"]:
            self.finish(name, "failed", f"finished with {fields['failed_resources']} failed resource(s)", **fields)
        else:
            self.finish(name, "ok", f"finished: {fields['changed_resources']} resource(s) changed", **fields)

    def result(self, concurrency: int) -> RunAllResult:
        """The outcomes so far as a RunAllResult."""
        return RunAllResult(tuple(self.outcomes[n] for n in sorted(self.outcomes)), concurrency,
                            time.monotonic() - self.started, self.peak)


def _runs(fc: FleetClient, filter_expr: str, run_options: Mapping[str, Any] | None, run_timeout: float,
          lost_after: float, status_timeout: float | None, on_event: Callable[[RunEvent], None] | None,
          job: str | None = None) -> _Runs:
    if not run_timeout > 0 or not lost_after > 0:
        raise ValueError("run_timeout and lost_after must be positive numbers of seconds")
    return _Runs(fc, filter_expr, dict(run_options or {}), run_timeout, lost_after, status_timeout, on_event, job)


async def runall(fc: FleetClient, *, concurrency: int, identities: Sequence[str], filter_expr: str = "",
                 run_options: Mapping[str, Any] | None = None, poll_interval: float = 1.0,
                 run_timeout: float = 1800.0, lost_after: float = 30.0, status_timeout: float | None = None,
                 on_event: Callable[[RunEvent], None] | None = None, job: str | None = None) -> RunAllResult:
    """Run Puppet once on every node, keeping at most `concurrency` applying at once (a sliding window).

    `run_options` are extra runonce inputs (noop, tags); runs always start
    forced, without splay. Returns when every node has an outcome. With `job`, every
    node's runonce reply is kept in that job.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    runs = _runs(fc, filter_expr, run_options, run_timeout, lost_after, status_timeout, on_event, job)
    queue = deque(sorted(set(identities)))
    first = await runs.status(queue)
    for name in list(queue):
        reply = first.get(name)
        if reply is None or not reply.ok:
            queue.remove(name)
            runs.finish(name, "no_response" if reply is None else "start_failed",
                        "did not answer puppet status" if reply is None else reply.message)
        elif reply.data.get("applying"):
            runs.saw_busy(name)
    while queue or runs.running or runs.busy:
        for name in list(queue):
            if runs.applying >= concurrency:
                break
            if name in runs.busy:
                continue  # its own run comes after the one in progress
            if await runs.start(name) != "busy":
                queue.remove(name)
        if not runs.running and not runs.busy:
            continue  # nothing to wait for: the queue is empty, or every start answered at once
        await asyncio.sleep(poll_interval)  # polling Puppet is the only way to see a run end
        for name in await runs.poll():
            if name in queue:  # back to the front: it has waited longest
                queue.remove(name)
                queue.appendleft(name)
        for name in list(queue):
            if name in runs.outcomes:
                queue.remove(name)
    return runs.result(concurrency)


async def run_in_batches(fc: FleetClient, *, identities: Sequence[str], size: int, batch_sleep: float = 0.0,
                         filter_expr: str = "", run_options: Mapping[str, Any] | None = None,
                         poll_interval: float = 1.0, run_timeout: float = 1800.0, lost_after: float = 30.0,
                         status_timeout: float | None = None, on_event: Callable[[RunEvent], None] | None = None,
                         on_batch: Callable[[int, int], None] | None = None, job: str | None = None) -> RunAllResult:
    """Run Puppet on `size` nodes at a time; the next batch starts once every run of this one ended.

    A node of the batch that was already applying is reported as not started
    (runonce's refusal) but still waited for, so it never overlaps the next batch.
    """
    if size < 1:
        raise ValueError("batch size must be at least 1")
    runs = _runs(fc, filter_expr, run_options, run_timeout, lost_after, status_timeout, on_event, job)
    names = sorted(set(identities))
    batches = [names[i:i + size] for i in range(0, len(names), size)]
    for index, batch in enumerate(batches):
        for name in batch:
            if await runs.start(name) == "busy":
                runs.outcomes[name] = NodeOutcome(name, "start_failed",
                                                  "Puppet is currently applying a catalog, cannot run now")
        while runs.running or runs.busy:
            await asyncio.sleep(poll_interval)  # polling Puppet is the only way to see a run end
            await runs.poll()
        if on_batch is not None:
            on_batch(index + 1, len(batches))
        if batch_sleep > 0 and index + 1 < len(batches):
            await asyncio.sleep(batch_sleep)  # the operator asked for a pause between batches
    return runs.result(size)
