"""What the web console shows, read from NATS only: registry, NMC_JOBS, NMC_AUDIT, NMC_EVENTS.

Every read reuses the client library's readers (nmc.client.registry, nmc.client.jobs,
nmc.client.events, nmc.audit.reader), so the console verifies what it shows exactly
as `nmc jobs show`, `nmc audit query` and `nmc events query` do. The results are plain
dicts: the JSON API returns them as they are, the templates render them (escaped).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from nats.aio.client import Client as NATS

from nmc.audit.formats import parse_time
from nmc.audit.reader import AuditQuery, read_records
from nmc.client.events import EVENTS_STREAM, SeenEvent, query_events
from nmc.client.jobs import Job, JobsError, JobSummary, job_subjects, list_jobs, read_job
from nmc.client.registry import RegistrySnapshot, read_registry
from nmc.errors import NmcError
from nmc.ops.config.settings import parse_duration
from nmc.ops.console.jobview import action_spec, aggregate_view, duration_histogram, reply_fields, status_chart
from nmc.ops.console.snapshot import MAX_AGE, MAX_STALE, CachedRead, RegistryCache
from nmc.protocol.ddl import AgentSpec
from nmc.protocol.ddls import BUILTIN_DDLS
from nmc.protocol.envelope import Reply
from nmc.protocol.filter import FilterSyntaxError, MatchAll, matches, parse
from nmc.protocol.jobs import check_job_id, jobs_subjects, parse_job_subject
from nmc.protocol.registry import DEFAULT_BUCKET, RegistryEntry
from nmc.security import Verifier

__all__ = ["ConsoleData", "ConsoleQueryError", "DEFAULT_COLUMNS", "PAGE_SIZE", "fact_text", "flatten_facts",
           "lookup_fact", "parse_since"]

DEFAULT_COLUMNS = ("role", "country", "operatingsystem", "environment")
PAGE_SIZE = 200  # nodes per Fleet page
QUIET_AFTER = 120.0  # seconds without a registry update after which a node is marked quiet (2 x registerinterval)
JOB_PAGE_SIZE = 200  # replies per Job page
JOBS_PAGE_SIZE = 200  # jobs per Jobs page
SETTLED_JOBS = 16  # jobs that can change no more, kept verified for their next pages
SETTLE_SECONDS = 60.0  # after a job's timeout, before it counts as settled
TOP_VALUES = 10  # values per fact in the Fleet page's counts
AUDIT_LIMIT = 1000  # newest matching records an audit search returns
EVENTS_LIMIT = 200  # newest events the Events page shows


class ConsoleQueryError(NmcError):
    """A bad query parameter (a filter that does not parse, a bad time); `position` for filters."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


def lookup_fact(facts: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted fact path (``os.release.major``), or None."""
    if path in facts:
        return facts[path]
    value: Any = facts
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def fact_text(value: Any) -> str:
    """A fact value as one line of text (structures as compact JSON). Escaping is the template's job."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def flatten_facts(facts: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Every leaf fact as (dotted path, text), sorted by path."""
    out: list[tuple[str, str]] = []
    for key in sorted(facts, key=str):
        value, path = facts[key], f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += flatten_facts(value, f"{path}.")
        else:
            out.append((path, fact_text(value)))
    return out


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``2h``/``30m``/``7d``/``45s`` ago (the config's durations), or an ISO 8601 time (UTC unless it says); None for empty."""
    if not text or not text.strip():
        return None
    text, now = text.strip(), now or datetime.now(timezone.utc)
    age = parse_duration(text) if text[-1:].isalpha() else None
    if age is not None:
        return now - timedelta(seconds=age)
    try:
        return parse_time(text)
    except ValueError:
        raise ConsoleQueryError(f"bad time {text!r}: give 30m, 2h, 7d or an ISO 8601 time") from None


def _node(entry: RegistryEntry, columns: Sequence[str]) -> dict[str, Any]:
    return {"identity": entry.identity, "collective": entry.collective, "last_seen": entry.last_seen,
            "facts": {c: fact_text(lookup_fact(entry.facts, c)) for c in columns},
            "agents": list(entry.agents), "classes": list(entry.classes), "version": entry.version}


@dataclass
class ConsoleData:
    """The console's reads on one NATS connection (the console certificate's: role ``console``)."""

    nc: NATS
    collective: str
    verifier: Verifier  # jobs: callers' and nodes' signatures (the fleet CA)
    record_verifier: Any  # nmc.audit.verify.RecordVerifier: audit records
    event_verifier: Any  # nmc.security.events.EventVerifier: lifecycle events
    bucket: str = DEFAULT_BUCKET
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    timeout: float = 10.0
    _jobs_by_id: dict[str, str] = field(default_factory=dict)  # job id -> caller, learnt from listings
    # (caller, job id) -> a verified job that can change no more (_read_job), the most recent SETTLED_JOBS
    _settled: collections.OrderedDict[tuple[str, str], Job] = field(default_factory=collections.OrderedDict)
    # caller -> job id -> the list's summary of a job that can change no more (jobs()); gone with the stream's limits
    _summaries: dict[str, dict[str, JobSummary]] = field(default_factory=dict)
    quiet_after: float = QUIET_AFTER  # the Fleet page marks nodes whose record is older (nmc find --quiet-after)
    registry_max_age: float = MAX_AGE  # seconds a registry read serves the Fleet and Node pages (snapshot.py)
    _registry: RegistryCache | None = None
    # The DDLs the Job page labels replies with: the built-in agents' (a plugin's DDL is in its code).
    specs: Mapping[str, AgentSpec] = field(default_factory=lambda: {d.name: d for d in BUILTIN_DDLS})

    # -- Fleet and Node ----------------------------------------------------------------------

    async def registry(self) -> CachedRead:
        """The console's registry read, shared by pages for `registry_max_age` seconds (nmc.ops.console.snapshot)."""
        return await self._registry_cache().get()

    def warm(self) -> None:
        """Start reading the registry now (the console starting): the first Fleet page need not wait for it."""
        self._registry_cache().warm()

    def _registry_cache(self) -> RegistryCache:
        if self._registry is None:
            self._registry = RegistryCache(self._read_registry, max_age=self.registry_max_age,
                                           max_stale=max(MAX_STALE, self.registry_max_age))
        return self._registry

    async def _read_registry(self) -> RegistrySnapshot:
        return await read_registry(self.nc, self.collective, bucket=self.bucket, timeout=self.timeout)

    async def close(self) -> None:
        """Stop the registry reads (the console is stopping)."""
        if self._registry is not None:
            await self._registry.close()

    async def fleet(self, filter_text: str = "", *, page: int = 1, columns: Sequence[str] | None = None,
                    page_size: int = PAGE_SIZE, quiet_only: bool = False) -> dict[str, Any]:
        """One page of the registry's nodes the filter selects, with the columns' value counts.

        A node whose record was not refreshed for `quiet_after` seconds is marked quiet (as
        `nmc find --dm registry --quiet-after`); `quiet_only` keeps only those.
        """
        columns = tuple(columns or self.columns)
        tree = _parse_filter(filter_text)
        cached = await self.registry()
        snapshot = cached.snapshot
        now = time.time()
        chosen = [e for e in snapshot.entries if matches(tree, e.facts, e.classes, e.identity, e.agents)]
        quiet = {e.identity for e in chosen if now - e.last_seen > self.quiet_after}
        if quiet_only:
            chosen = [e for e in chosen if e.identity in quiet]
        pages = max(1, -(-len(chosen) // page_size))
        page = min(max(1, page), pages)
        counts: dict[str, list[dict[str, Any]]] = {}
        for column in columns:
            tally = collections.Counter(fact_text(lookup_fact(e.facts, column)) for e in chosen)
            counts[column] = [{"value": value, "count": n, "percent": round(100 * n / len(chosen))}
                              for value, n in tally.most_common(TOP_VALUES)]
        return {"collective": self.collective, "filter": filter_text or "", "columns": list(columns),
                "total": len(snapshot.entries), "matched": len(chosen), "page": page, "pages": pages,
                "page_size": page_size, "skipped": snapshot.skipped, "now": now,
                "quiet": len(quiet), "quiet_after": self.quiet_after, "quiet_only": quiet_only,
                "read_at": cached.read_at, "read_age": round(cached.age(), 1),
                "read_seconds": round(snapshot.elapsed, 2),
                "nodes": [{**_node(e, columns), "quiet": e.identity in quiet}
                          for e in chosen[(page - 1) * page_size:page * page_size]],
                "counts": counts}

    async def node(self, identity: str) -> dict[str, Any] | None:
        """Everything the registry holds about one node, or None (from the console's cached read, as the Fleet page)."""
        for entry in (await self.registry()).snapshot.entries:
            if entry.identity == identity:
                return {"identity": entry.identity, "collective": entry.collective, "last_seen": entry.last_seen,
                        "version": entry.version, "facts_version": entry.facts_version,
                        "facts": dict(entry.facts), "facts_flat": flatten_facts(entry.facts),
                        "classes": list(entry.classes), "agents": list(entry.agents)}
        return None

    # -- Jobs --------------------------------------------------------------------------------

    async def _job_subjects(self, pattern: str) -> list[str]:
        return await job_subjects(self.nc, pattern)

    async def jobs(self, *, caller: str | None = None, agent: str | None = None, page: int = 1,
                   page_size: int = JOBS_PAGE_SIZE) -> dict[str, Any]:
        """Every caller's jobs (or one caller's), newest first, as `nmc jobs list --json` shows them, a page of them.

        Summaries of jobs that can change no more are kept (`_summaries`), so a visit reads
        only the records of the jobs that are new or still running.
        """
        starts = await self._job_subjects(jobs_subjects(self.collective, caller).removesuffix(">") + "*.start")
        callers = sorted({parse_job_subject(s).caller for s in starts})
        listed = await asyncio.gather(*(list_jobs(self.nc, self.verifier, self.collective, who, agent=agent,
                                                  known=self._summaries.get(who)) for who in callers))
        out: list[dict[str, Any]] = []
        now = time.time()
        for who, summaries in zip(callers, listed):
            kept = self._summaries.setdefault(who, {})
            if agent is None:  # a full listing: forget the jobs the stream no longer holds
                present = {summary.job.start.id for summary in summaries}
                for gone in set(kept) - present:
                    del kept[gone]
            for summary in summaries:
                start, end = summary.job.start, summary.job.end
                out.append(summary.to_dict())
                self._jobs_by_id[start.id] = who
                if end is not None and now > start.started + start.timeout + SETTLE_SECONDS:
                    kept[start.id] = summary
        out.sort(key=lambda d: d["started"], reverse=True)
        pages = max(1, -(-len(out) // page_size))
        page = min(max(1, page), pages)
        return {"jobs": out[(page - 1) * page_size:page * page_size], "total": len(out), "page": page,
                "pages": pages, "page_size": page_size}

    async def job(self, job_id: str, caller: str | None = None, *, page: int = 1,
                  page_size: int = JOB_PAGE_SIZE, seen: dict[str, Reply] | None = None) -> dict[str, Any]:
        """One job with every verified reply (JobsError when there is none), as `nmc jobs show --json`.

        The charts, counts and aggregates cover every reply; `replies` is one page of them
        (by identity, `page_size` a page), so a job over 5,000 nodes is not one 5,000-row page.
        `seen`: replies an earlier read of this running job verified (a live view), not read again.
        """
        try:
            check_job_id(job_id)
        except Exception as exc:  # noqa: BLE001 - JobError; any malformed id is the caller's mistake
            raise ConsoleQueryError(f"bad job id {job_id!r}") from exc
        caller = caller or self._jobs_by_id.get(job_id)
        if caller is None:
            starts = await self._job_subjects(f"{jobs_subjects(self.collective).removesuffix('>')}{job_id}.start")
            if not starts:
                raise JobsError(f"no job {job_id} (jobs are kept for a limited time: see nmc ops setup)")
            caller = parse_job_subject(starts[0]).caller
        job = await self._read_job(caller, job_id, seen)
        start = job.start
        spec = action_spec(self.specs, start.agent, start.action)
        replies = [{"identity": r.identity, "status": r.status, "status_label": r.status.label, "ok": r.ok,
                    "message": r.message, "data": r.data, "elapsed": round(r.elapsed, 3)}
                   for r in sorted(job.results, key=lambda r: r.identity)]
        for reply in replies:
            reply["fields"] = reply_fields(reply, spec)
        pages = max(1, -(-len(replies) // page_size))
        page = min(max(1, page), pages)
        return {"id": start.id, "caller": start.caller, "agent": start.agent, "action": start.action,
                "filter": start.filter, "started": start.started, "timeout": start.timeout,
                "ended": job.end.ended if job.end is not None else None, "complete": job.complete(),
                "expected": list(start.expected) if start.expected is not None else None,
                "reply_count": len(replies), "page": page, "pages": pages, "page_size": page_size,
                "replies": replies[(page - 1) * page_size:page * page_size], "missing": list(job.missing),
                "unverified": [{"subject": u.subject, "reason": u.reason} for u in job.unverified],
                "ddl": spec is not None, "aggregates": aggregate_view(spec, replies),
                "charts": {"status": status_chart(replies, job.missing),
                           "durations": duration_histogram([r["elapsed"] for r in replies])}}

    async def _read_job(self, caller: str, job_id: str, seen: dict[str, Reply] | None = None) -> Job:
        """The job, verified; a job that can change no more is kept (a few), so its pages need not read it again.

        Settled: its end record is stored and its requests' time is over (a node that had not
        answered by then never will: the request's ttl), plus a minute for the broker.
        """
        key = (caller, job_id)
        job = self._settled.get(key)
        if job is not None:
            self._settled.move_to_end(key)
            return job
        job = await read_job(self.nc, self.verifier, self.collective, caller, job_id, seen=seen)
        if seen is None and job.end is not None and time.time() > job.start.started + job.start.timeout + SETTLE_SECONDS:
            self._settled[key] = job
            while len(self._settled) > SETTLED_JOBS:
                self._settled.popitem(last=False)
        return job

    async def job_marker(self, job_id: str, caller: str) -> int:
        """How many records the job has stored (start, replies, end): what a live view polls to see a change.

        One STREAM.INFO with a subject filter (each record has its own subject, kept once), rather
        than reading and verifying every reply again each time.
        """
        return len(await self._job_subjects(jobs_subjects(self.collective, caller, job_id)))

    # -- Audit and Events --------------------------------------------------------------------

    async def audit(self, query: AuditQuery, *, decision: str | None = None,
                    limit: int = AUDIT_LIMIT) -> list[dict[str, Any]]:
        """The newest `limit` genuine audit records matching `query` (and allowed/denied), newest first."""
        if decision not in (None, "", "allowed", "denied"):
            raise ConsoleQueryError(f"bad decision {decision!r}: allowed or denied")
        kept: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        async for record in read_records(self.nc.jetstream(timeout=self.timeout), query,
                                         verifier=self.record_verifier):
            if decision and bool(record.get("allowed", True)) != (decision == "allowed"):
                continue
            kept.append(record)
        return list(reversed(kept))

    async def events(self, *, kind: str | None = None, identity: str | None = None,
                     since: datetime | None = None, limit: int = EVENTS_LIMIT,
                     filter_text: str = "") -> list[dict[str, Any]]:
        """The newest `limit` genuine lifecycle events from NMC_EVENTS (the last day unless `since`), newest first.

        `filter_text` (the -F/-C/-I/-A/-S language) keeps the events of the nodes whose registry
        record it selects, as `nmc events watch -F` does; a publisher with no record (the policy
        and audit services) is then left out.
        """
        chosen = await self.filtered_identities(filter_text)
        since = since or datetime.now(timezone.utc) - timedelta(days=1)
        kept: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        async for seen in query_events(self.nc, self.event_verifier, collective=self.collective, kind=kind or None,
                                       identity=identity or None, since=since, timeout=self.timeout):
            if seen.event is not None and (chosen is None or seen.event.identity in chosen):
                kept.append(_event(seen))
        return list(reversed(kept))

    async def filtered_identities(self, filter_text: str) -> frozenset[str] | None:
        """The identities a filter selects in the console's registry read; None for no filter (everyone)."""
        tree = _parse_filter(filter_text)
        if isinstance(tree, MatchAll):
            return None
        entries = (await self.registry()).snapshot.entries
        return frozenset(e.identity for e in entries if matches(tree, e.facts, e.classes, e.identity, e.agents))

    async def events_position(self) -> int:
        """NMC_EVENTS' last sequence now: a live Events page follows the stream from there (0: empty or none)."""
        try:
            info = await self.nc.jetstream(timeout=self.timeout).stream_info(EVENTS_STREAM)
        except Exception:  # noqa: BLE001 - no stream yet: follow it from its beginning
            return 0
        return int(info.state.last_seq or 0)

    async def events_after(self, after: int, *, kind: str | None = None, identity: str | None = None,
                           limit: int = EVENTS_LIMIT, filter_text: str = "") -> tuple[list[dict[str, Any]], int]:
        """The genuine events stored after sequence `after` (oldest first, at most `limit`), and where to go on.

        Refused events are passed over for good: the position moves past them too.
        """
        chosen = await self.filtered_identities(filter_text)
        position, found = after, []

        def passed(seen: SeenEvent) -> None:
            nonlocal position
            position = max(position, seen.seq or 0)

        async for seen in query_events(self.nc, self.event_verifier, collective=self.collective, kind=kind or None,
                                       identity=identity or None, after=after, on_refused=passed,
                                       timeout=self.timeout):
            passed(seen)
            if seen.event is not None and (chosen is None or seen.event.identity in chosen):
                found.append(_event(seen))
            if len(found) >= limit:
                break
        return found, position


def _parse_filter(text: str | None) -> Any:
    """A filter of the -F/-C/-I/-A/-S language; ConsoleQueryError with the column where it broke."""
    try:
        return parse(text or "")
    except FilterSyntaxError as exc:
        raise ConsoleQueryError(f"bad filter: {exc}", exc.position) from exc


def _event(seen: SeenEvent) -> dict[str, Any]:
    """One verified lifecycle event as the Events page and /api/events show it."""
    event = seen.event
    assert event is not None
    return {"kind": event.kind, "identity": event.identity, "collective": event.collective,
            "time": event.time, "id": event.id, "data": dict(event.data), "seq": seen.seq,
            "stored": seen.stored.isoformat() if seen.stored is not None else None}
