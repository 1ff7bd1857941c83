"""Jobs: record an rpc in NMC_JOBS, and read jobs back with every signature checked again.

A job (nmc.protocol.jobs) is the caller's signed start record, the nodes' signed
replies (each node stores its own, because the request names the job) and the
caller's signed end record. Writing: `start_job` before the request goes out,
`end_job` after gathering; `--background` writes no end record.

Reading goes through direct gets with the subject in the API subject
(`$JS.API.DIRECT.GET.NMC_JOBS.<subject>`), the one JetStream read the broker can
allow per caller: a user reads the jobs under its own name, the `auditor` role
everyone's (nmc.security.permissions). One `STREAM.INFO` lists a caller's
subjects. Nothing read is trusted: start and end records must be signed by the
caller they name, replies by the node they name, each under the subject that names
the same; anything else is reported as failing verification, never shown as genuine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS

from nmc.client.fleet import FleetClient, NodeResult
from nmc.errors import ClientError, reason_of
from nmc.protocol.envelope import EnvelopeError, Reply
from nmc.protocol.jobs import (JOBS_STREAM, JobEnd, JobError, JobStart, JobSubject, job_subject, jobs_subjects,
                               parse_job_subject)
from nmc.protocol.subjects import encode_token
from nmc.security import CERTIFICATE_HEADER, SIGNATURE_HEADER, SecurityError, Verifier

__all__ = ["Job", "JobsError", "JobSummary", "NodeJob", "Unverified", "end_job", "job_start", "job_subjects",
           "list_jobs", "node_jobs", "read_job", "start_job", "wait_job"]

log = structlog.get_logger("nmc.jobs")
_IN_FLIGHT = 64  # direct gets at once
_READ_TIMEOUT = 5.0
_POLL = 0.25  # seconds between two reads while waiting for a job's replies


class JobsError(ClientError):
    """A job cannot be recorded or read (no stream, not allowed, no such job); one line."""


@dataclass(frozen=True)
class Unverified:
    """A stored message that failed verification: where it was and why it is not shown."""

    subject: str
    reason: str


@dataclass(frozen=True)
class Job:
    """One job as read back: its records and the replies that verified, and what did not."""

    start: JobStart
    end: JobEnd | None
    results: tuple[NodeResult, ...]
    unverified: tuple[Unverified, ...] = ()

    @property
    def expected(self) -> tuple[str, ...] | None:
        """Whom the job waited for (None: a broadcast without a registry)."""
        return self.start.expected

    @property
    def missing(self) -> tuple[str, ...]:
        """Expected nodes without a verified reply."""
        answered = {r.identity for r in self.results}
        return tuple(sorted(set(self.expected or ()) - answered))

    def complete(self, now: float | None = None) -> bool:
        """Every expected node answered, the end record is there, or the job's time is up."""
        now = time.time() if now is None else now
        if self.end is not None or now >= self.start.started + self.start.timeout:
            return True
        return self.expected is not None and not self.missing


@dataclass(frozen=True)
class JobSummary:
    """A line of `nmc jobs list`."""

    job: Job
    # True: ok/failed/missing come from the caller's signed end record and the replies were not read
    # (a list of jobs over 5,000 nodes would otherwise read and verify 5,000 replies per job).
    from_end: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of `nmc jobs list --json`."""
        start, results, end = self.job.start, self.job.results, self.job.end
        ended = end.ended if end is not None else None
        if self.from_end and end is not None and end.ok is not None and end.failed is not None:
            ok, failed, missing = end.ok, end.failed, len(end.missing)
        else:
            ok, failed, missing = sum(1 for r in results if r.ok), sum(1 for r in results if not r.ok), \
                len(self.job.missing)
        return {"id": start.id, "caller": start.caller, "agent": start.agent, "action": start.action,
                "filter": start.filter, "targets": len(start.expected) if start.expected is not None else None,
                "ok": ok, "failed": failed, "missing": missing, "unverified": len(self.job.unverified),
                "started": start.started, "duration_s": round(ended - start.started, 3) if ended is not None else None,
                "background": end is None, "replies_read": not self.from_end}


async def _store(fc: FleetClient, subject: str, body: bytes, what: str) -> None:
    try:
        await fc.nc.jetstream(timeout=_READ_TIMEOUT).publish(subject, body, headers=fc.signer.headers(body))
    except Exception as exc:  # noqa: BLE001 - nats-py raises many types (no responders, timeout, API error)
        raise JobsError(f"cannot record the job's {what} in {JOBS_STREAM}: {str(exc) or type(exc).__name__} "
                        "(has the operator run `nmc ops setup`?)") from exc


async def start_job(fc: FleetClient, start: JobStart) -> None:
    """Store the job's signed start record (JobsError when NMC_JOBS does not take it)."""
    await _store(fc, job_subject(start.collective, fc.signer.name, start.id, "start"), start.to_bytes(), "start")


async def end_job(fc: FleetClient, collective: str, end: JobEnd) -> None:
    """Store the job's signed end record (JobsError when NMC_JOBS does not take it)."""
    await _store(fc, job_subject(collective, fc.signer.name, end.id, "end"), end.to_bytes(), "end")


class _Reader:
    """Direct gets and stream info on NMC_JOBS, each bounded."""

    def __init__(self, nc: NATS, timeout: float = _READ_TIMEOUT) -> None:
        self.nc, self.timeout = nc, timeout
        self.gate = asyncio.Semaphore(_IN_FLIGHT)

    async def subjects(self, pattern: str, who: str) -> list[str]:
        found: list[str] = []
        while True:
            answer = await self._api(f"$JS.API.STREAM.INFO.{JOBS_STREAM}",
                                     json.dumps({"subjects_filter": pattern, "offset": len(found)}).encode(), who)
            error = answer.get("error")
            if error:
                if error.get("err_code") == 10059:
                    raise JobsError(f"no {JOBS_STREAM} stream: has the operator run `nmc ops setup`?")
                raise JobsError(f"cannot list jobs: {error.get('description') or error}")
            page = list(((answer.get("state") or {}).get("subjects") or {}))
            found += page
            if not page or len(found) >= int(answer.get("total") or 0):
                return found

    async def _api(self, subject: str, body: bytes, who: str) -> dict[str, Any]:
        try:
            msg = await self.nc.request(subject, body, timeout=self.timeout)
            answer = json.loads(msg.data)
        except nats.errors.NoRespondersError:
            raise JobsError("no JetStream answers on this broker (is it enabled?)") from None
        except nats.errors.TimeoutError:
            raise JobsError(_refused(who)) from None
        except (nats.errors.Error, ValueError) as exc:
            raise JobsError(f"cannot read {JOBS_STREAM}: {str(exc) or type(exc).__name__}") from exc
        return answer if isinstance(answer, dict) else {}

    async def get(self, subject: str, who: str) -> Any | None:
        """The stored message of `subject` (a nats-py Msg with its headers), or None when there is none."""
        async with self.gate:
            try:
                msg = await self.nc.request(f"$JS.API.DIRECT.GET.{JOBS_STREAM}.{subject}", b"", timeout=self.timeout)
            except nats.errors.NoRespondersError:
                raise JobsError(f"no {JOBS_STREAM} stream that allows direct gets: has the operator run "
                                "`nmc ops setup`?") from None
            except nats.errors.TimeoutError:
                raise JobsError(_refused(who)) from None
        status = (msg.headers or {}).get("Status")
        return None if status else msg


def _refused(who: str) -> str:
    return (f"no answer from {JOBS_STREAM} for {who}'s jobs within {_READ_TIMEOUT:g} s: the broker refuses to show "
            "another caller's jobs unless the certificate has the auditor role or jobs.policy grants it "
            "(or JetStream is down)")


def _verify_record(msg: Any, verifier: Verifier, caller: str, kind: type[JobStart] | type[JobEnd]) -> Any:
    headers = msg.headers or {}
    record = kind.from_bytes(msg.data)
    name = verifier.verify(msg.data, headers.get(SIGNATURE_HEADER), headers.get(CERTIFICATE_HEADER))
    if name != caller or record.caller != caller:
        raise SecurityError(f"record of caller {record.caller!r} under {caller!r}'s jobs is signed by {name!r}")
    return record


def _verified_reply(msg: Any, verifier: Verifier, identity: str) -> Reply:
    """A stored reply whose signature is its node's, the node its subject names."""
    headers = msg.headers or {}
    reply = Reply.from_bytes(msg.data)
    name = verifier.verify(msg.data, headers.get(SIGNATURE_HEADER), headers.get(CERTIFICATE_HEADER))
    if not name == reply.identity == identity:
        raise SecurityError(f"reply stored as {identity!r} claims {reply.identity!r} and is signed by {name!r}")
    return reply


def _job_result(reply: Reply, start: JobStart, end: JobEnd | None) -> NodeResult:
    """A verified reply as this job's result: it must answer one of the job's requests when the end names them."""
    if end is not None and end.request_ids and reply.request_id not in end.request_ids:
        raise SecurityError(f"reply to request {reply.request_id!r}, not one of this job's")
    return NodeResult(identity=reply.identity, status=reply.status, message=reply.message, data=reply.data,
                      elapsed=max(0.0, reply.time - start.started))


async def _read(reader: _Reader, verifier: Verifier, collective: str, caller: str, job_id: str,
                subjects: Sequence[str], *, replies_unless_counted: bool = False,
                seen: dict[str, Reply] | None = None) -> Job | None:
    """The job's verified records and replies; with `replies_unless_counted`, no replies when the end has counts.

    `seen` (reply subject -> verified reply) carries the replies an earlier read of the same
    job verified: only the others are read (a job being watched grows; it is not read whole
    again on every change). Each is checked against the end record on every read.
    """
    start_msg = await reader.get(job_subject(collective, caller, job_id, "start"), caller)
    if start_msg is None:
        return None
    start = _verify_record(start_msg, verifier, caller, JobStart)
    if start.id != job_id:
        raise SecurityError(f"start record of job {start.id!r} stored as job {job_id!r}")
    end_msg = await reader.get(job_subject(collective, caller, job_id, "end"), caller)
    unverified: list[Unverified] = []
    end: JobEnd | None = None
    if end_msg is not None:
        try:
            end = _verify_record(end_msg, verifier, caller, JobEnd)
        except (JobError, SecurityError) as exc:
            unverified.append(Unverified(end_msg.subject, reason_of(exc)))
    if replies_unless_counted and end is not None and end.ok is not None:
        return Job(start=start, end=end, results=(), unverified=tuple(unverified))
    known = seen if seen is not None else {}
    replies = [s for s in subjects if ".reply." in s]
    fresh = [s for s in replies if s not in known]
    messages = dict(zip(fresh, await asyncio.gather(*(reader.get(s, caller) for s in fresh))))
    results: list[NodeResult] = []
    for subject in replies:
        try:
            reply = known.get(subject)
            if reply is None:
                msg = messages.get(subject)
                if msg is None:
                    continue
                reply = _verified_reply(msg, verifier, parse_job_subject(subject).identity or "")
                known[subject] = reply
            results.append(_job_result(reply, start, end))
        except (JobError, EnvelopeError, SecurityError) as exc:
            unverified.append(Unverified(subject, reason_of(exc)))
            log.warning("job_reply_unverified", job=job_id, subject=subject, reason=reason_of(exc))
    results.sort(key=lambda r: r.identity)
    return Job(start=start, end=end, results=tuple(results), unverified=tuple(unverified))


async def read_job(nc: NATS, verifier: Verifier, collective: str, caller: str, job_id: str,
                   *, seen: dict[str, Reply] | None = None) -> Job:
    """One job of `caller`, every stored message verified (JobsError when there is no such job).

    `seen`: replies an earlier read of this job verified, reused (see `_read`); None reads all.
    """
    reader = _Reader(nc)
    subjects = await reader.subjects(jobs_subjects(collective, caller, job_id), caller)
    try:
        job = await _read(reader, verifier, collective, caller, job_id, subjects, seen=seen)
    except (JobError, SecurityError) as exc:
        raise JobsError(f"job {job_id}: its start record fails verification: {reason_of(exc)}") from exc
    if job is None:
        raise JobsError(f"no job {job_id} of {caller} (jobs are kept for a limited time: see nmc ops setup)")
    return job


async def wait_job(nc: NATS, verifier: Verifier, collective: str, caller: str, job_id: str,
                   *, limit: float | None = None) -> Job:
    """Read the job as it grows until every expected node answered or its timeout passed (or `limit` seconds).

    Nobody may subscribe to job subjects, so it polls: one STREAM.INFO for the job's subject
    count every `_POLL` seconds, and a read of only the replies not verified yet when the count
    changed. The job returned is read whole and verified afresh, as `read_job` reads it.
    """
    deadline = None if limit is None else time.monotonic() + limit
    reader, seen = _Reader(nc), dict[str, Reply]()
    count, times_out = -1, float("inf")  # subjects at the last read; when the job's time is up
    while True:
        now_count = len(await reader.subjects(jobs_subjects(collective, caller, job_id), caller))
        if now_count != count or time.time() >= times_out:
            count = now_count
            job = await read_job(nc, verifier, collective, caller, job_id, seen=seen)
            times_out = job.start.started + job.start.timeout
            if job.complete():
                break
        if deadline is not None and time.monotonic() >= deadline:
            break
        await asyncio.sleep(_POLL)
    return await read_job(nc, verifier, collective, caller, job_id)


async def list_jobs(nc: NATS, verifier: Verifier, collective: str, caller: str, *, agent: str | None = None,
                    since: float | None = None, known: Mapping[str, JobSummary] | None = None) -> list[JobSummary]:
    """The jobs of `caller`, newest first, optionally of one agent or started after `since` (unix time).

    A job with an end record that counts its OK and failed replies (every rpc since 2026-12-04) is
    summarised from that signed record, its replies not read: `jobs show` reads and verifies them.
    A background job (no end record) or an older one has its replies read and verified.
    `known`: summaries (by job id) the caller already read of jobs that can change no more;
    they are reused, not read again.
    """
    reader = _Reader(nc)
    by_job: dict[str, list[str]] = {}
    for subject in await reader.subjects(jobs_subjects(collective, caller), caller):
        try:
            by_job.setdefault(parse_job_subject(subject).job_id, []).append(subject)
        except JobError:
            continue
    jobs: list[JobSummary] = []

    async def one(job_id: str, subjects: list[str]) -> None:
        summary = (known or {}).get(job_id)
        if summary is None:
            try:
                job = await _read(reader, verifier, collective, caller, job_id, subjects,
                                  replies_unless_counted=True)
            except (JobError, SecurityError) as exc:
                log.warning("job_unverified", job=job_id, reason=reason_of(exc))
                return
            if job is None:
                return
            summary = JobSummary(job, from_end=job.end is not None and job.end.ok is not None)
        if agent is not None and summary.job.start.agent != agent:
            return
        if since is not None and summary.job.start.started < since:
            return
        jobs.append(summary)

    await asyncio.gather(*(one(j, s) for j, s in by_job.items()))
    return sorted(jobs, key=lambda j: j.job.start.started, reverse=True)


@dataclass(frozen=True)
class NodeJob:
    """One job as one node answered it: the caller's request (start record) and this node's verified reply."""

    job_id: str
    caller: str
    agent: str
    action: str
    started: float
    status: int
    ok: bool
    message: str


async def node_jobs(nc: NATS, verifier: Verifier, collective: str, identity: str, *, limit: int = 20,
                    scan: int = 2000) -> tuple[list[NodeJob], int]:
    """The newest `limit` jobs `identity` answered (any caller's: the reader needs the auditor's reach).

    Returns them newest first, and how many of its stored replies (or their jobs' start
    records) failed verification. A node's replies are spread over every caller's jobs
    and STREAM.INFO lists subjects without their age, so at most `scan` of them are read
    (each verified: a reply signed by the node named in its subject) before sorting.
    """
    reader = _Reader(nc)
    pattern = f"{jobs_subjects(collective).removesuffix('>')}*.reply.{encode_token(identity)}"
    subjects = (await reader.subjects(pattern, "every caller"))[:scan]
    messages = await asyncio.gather(*(reader.get(s, "every caller") for s in subjects))
    replies: list[tuple[Reply, JobSubject]] = []
    failed = 0
    for subject, msg in zip(subjects, messages):
        if msg is None:
            continue
        try:
            where = parse_job_subject(subject)
            reply = _verified_reply(msg, verifier, identity)
        except (JobError, EnvelopeError, SecurityError) as exc:
            failed += 1
            log.warning("job_reply_unverified", subject=subject, reason=reason_of(exc))
            continue
        replies.append((reply, where))
    replies.sort(key=lambda pair: pair[0].time, reverse=True)
    out: list[NodeJob] = []
    for reply, where in replies[:limit]:
        start_msg = await reader.get(job_subject(collective, where.caller, where.job_id, "start"), where.caller)
        try:
            if start_msg is None:
                raise JobError("no start record")
            start = _verify_record(start_msg, verifier, where.caller, JobStart)
        except (JobError, SecurityError) as exc:
            failed += 1
            log.warning("job_unverified", job=where.job_id, reason=reason_of(exc))
            continue
        out.append(NodeJob(job_id=where.job_id, caller=where.caller, agent=start.agent, action=start.action,
                           started=start.started, status=int(reply.status), ok=reply.ok, message=reply.message))
    return out, failed


async def job_subjects(nc: NATS, pattern: str, who: str = "every caller") -> list[str]:
    """Every stored NMC_JOBS subject matching `pattern` (one STREAM.INFO a page); `who` names the reader's reach
    in the error when the broker refuses."""
    return await _Reader(nc).subjects(pattern, who)


def job_start(fc: FleetClient, job_id: str, agent: str, action: str, filter_expr: str,
              expected: Sequence[str] | None, timeout: float, data: Mapping[str, Any] | None = None,
              batch: int | None = None) -> JobStart:
    """The start record of a job this client runs now."""
    return JobStart(id=job_id, collective=fc.settings.collective, caller=fc.signer.name, agent=agent,
                    action=action, filter=filter_expr, started=time.time(), timeout=timeout,
                    expected=None if expected is None else tuple(sorted(set(expected))), data=dict(data or {}),
                    batch=batch)

