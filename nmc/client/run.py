"""Discover, then call (in batches when asked): the one sequence every fleet action goes through.

`nmc rpc`, the `nmc puppet` commands, `nmc facts` / `nmc inventory` and a
Python program all run an action the same way: find the nodes by the chosen
method (`Targeting`), stop when nobody was found (nothing is sent), then
publish once to exactly those nodes, or batch by batch with `batch`. Kept
here so the order, and what "nobody found" means, exist once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from nmc.client.batch import call_in_batches, parse_batch
from nmc.client.discovery import Targeting, discover, registered_nodes
from nmc.client.fleet import CallResult, FleetClient
from nmc.client.jobs import JobsError, end_job, job_start, start_job
from nmc.protocol.envelope import new_request_id
from nmc.protocol.jobs import JobEnd

__all__ = ["JobOptions", "end_recorded", "ping", "run_action", "start_recorded"]

log = structlog.get_logger("nmc.jobs")


async def ping(fc: FleetClient, filter_expr: str = "", *, method: str = "auto",
               timeout: float | None = None) -> CallResult:
    """Ping the nodes `filter_expr` matches: each one's verified reply, and who stayed silent.

    With the registry (`method` "auto", when it can be read), the client knows whom to
    expect: one publish on the routed subject, and gathering ends on the last expected reply
    instead of a stall timer; registered nodes that did not answer within `timeout`
    (default: the discovery timeout) are named in `no_response`. Without it ("broadcast"),
    gathering ends when replies stall, and nobody can be named as silent.
    """
    wait = timeout or fc.settings.discovery_timeout
    if method == "auto":
        method = fc.settings.discovery_method
    if method == "registry":
        method = "auto"  # ping asks the nodes anyway: the registry says whom to expect, never whom to skip
    expected = await registered_nodes(fc, filter_expr) if method == "auto" else None
    if expected is None:
        return await fc.discover(filter_expr, timeout=wait)
    result = await fc.call("rpcutil", "ping", {}, filter_expr=filter_expr, expect=expected, timeout=wait)
    if result.agent_unserved:
        # Nobody subscribed at all: every registered node is down (its record not yet expired).
        return dataclasses.replace(result, agent_unserved=False, no_response=tuple(sorted(expected)))
    return result


@dataclass(frozen=True)
class JobOptions:
    """Run the action as a job (nmc.client.jobs): its replies are kept in NMC_JOBS.

    `background`: publish and return at once, nobody gathers (`nmc rpc --background`).
    `shown_data`: the inputs as the start record keeps them (sensitive ones already "***").
    `on_job`: told the job id as soon as the start record is stored.
    """

    background: bool = False
    shown_data: Mapping[str, Any] | None = None
    on_job: Callable[[str], None] | None = None


async def run_action(fc: FleetClient, agent: str, action: str, data: Mapping[str, Any] | None = None, *,
                     filter_expr: str = "", targeting: Targeting | None = None, discovery: bool = True,
                     batch: str | None = None, batch_sleep: float = 0.0, timeout: float | None = None,
                     on_batch: Callable[[int, int, CallResult], None] | None = None,
                     job: JobOptions | None = None) -> CallResult | None:
    """Run `agent.action` on the nodes `filter_expr` and `targeting` pick; None when none were found.

    `discovery=False` skips discovery: one publish, gathering until replies
    stall (so nobody is named as silent). `batch` ("N" or "N%" of the nodes
    found; BatchError when malformed) addresses that many nodes at a time,
    the next batch starting when this one answered, `batch_sleep` seconds later.
    With `job`, the run is recorded as a job (its id in `CallResult.job_id`): a start
    record before the request, the nodes' signed replies, an end record after gathering.
    A job that cannot be recorded runs anyway (logged) unless it is a background one
    (JobsError: its replies would be kept nowhere).
    """
    inputs = data or {}
    if not discovery:
        if job is not None and job.background:
            raise JobsError("--background needs discovery: the job must say whom it waits for")
        return await fc.call(agent, action, inputs, filter_expr=filter_expr, timeout=timeout)
    found = await discover(fc, filter_expr, targeting or Targeting())
    if not found.identities:
        return None
    size = parse_batch(batch, len(found.identities)) if batch is not None else None
    job_id = await start_recorded(fc, agent, action, filter_expr, found.identities, timeout, job, batch=size) \
        if job else None
    if job is not None and job.background:
        assert job_id is not None
        request_id = await fc.send(agent, action, inputs, filter_expr=filter_expr, expect=found.identities,
                                   direct=found.direct, job=job_id)
        return CallResult(request_id, agent, action, "background", (), discovered=tuple(sorted(found.identities)),
                          job_id=job_id)
    if size is not None:
        result = await call_in_batches(fc, agent, action, inputs, identities=found.identities,
                                       filter_expr=filter_expr, size=size, sleep=batch_sleep, timeout=timeout,
                                       on_batch=on_batch, job=job_id)
    else:
        result = await fc.call(agent, action, inputs, filter_expr=filter_expr, expect=found.identities,
                               direct=found.direct, timeout=timeout, job=job_id)
    if job_id is None:
        return result
    await end_recorded(fc, job_id, (r.identity for r in result.results), result.no_response,
                       tuple(result.request_id.split(",")),
                       counts=(len(result.results) - len(result.failed), len(result.failed)))
    return dataclasses.replace(result, job_id=job_id)


async def end_recorded(fc: FleetClient, job_id: str, answered: Iterable[str], missing: Iterable[str],
                       request_ids: tuple[str, ...] = (), *, counts: tuple[int, int] | None = None) -> None:
    """Store a job's end record (with the OK and failed `counts` when known); a failure is logged."""
    ok, failed = counts if counts is not None else (None, None)
    end = JobEnd(id=job_id, caller=fc.signer.name, ended=time.time(), answered=tuple(sorted(set(answered))),
                 missing=tuple(sorted(set(missing))), request_ids=request_ids, ok=ok, failed=failed)
    try:
        await end_job(fc, fc.settings.collective, end)
    except JobsError as exc:
        log.warning("job_end_not_recorded", job=job_id, reason=exc.reason)


async def start_recorded(fc: FleetClient, agent: str, action: str, filter_expr: str, identities: Sequence[str],
                         timeout: float | None, job: JobOptions, *, batch: int | None = None) -> str | None:
    """Store a job's start record; its id, or None when it could not be stored (and the job may run without)."""
    job_id = new_request_id()
    start = job_start(fc, job_id, agent, action, filter_expr, identities, timeout or fc.settings.timeout,
                      job.shown_data, batch=batch)
    try:
        await start_job(fc, start)
    except JobsError as exc:
        if job.background:
            raise
        # info, not a warning: a broker without NMC_JOBS (no `nmc ops setup`) would repeat it on every rpc
        log.info("job_not_recorded", reason=exc.reason, hint="the rpc runs; its replies are kept nowhere")
        return None
    if job.on_job is not None:
        job.on_job(job_id)
    return job_id
