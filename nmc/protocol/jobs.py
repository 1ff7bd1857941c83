"""Jobs (PROTOCOL.md section 9, docs/jobs.md): the stored record of one `nmc rpc`. Pure.

A job is what one rpc sent and what came back, kept in the JetStream stream
NMC_JOBS so that it outlives the terminal that ran it:

- the client's **start** record (`JobStart`, signed by the caller): the job id,
  the action, the filter, whom it expected, its timeout;
- each node's **reply**, the exact signed bytes the node sent the caller, published
  by the node itself (the request said `job: <id>`, signed by the caller);
- the client's **end** record (`JobEnd`, signed by the caller) when it gathered to
  the end: who answered, who did not. A `--background` job has none.

Every subject names the caller: `nmc.jobs.<collective>.<caller>.<job id>.<kind>`
and, for replies, `.reply.<identity>`. That is what lets the broker decide who
reads what (nmc.security.permissions): a user may direct-get only subjects
under its own name, and only the `auditor` role every job. Each subject holds one
message (the stream keeps one per subject), so a reader gets a job by asking for
the last message of each of its subjects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nmc.errors import ProtocolError
from nmc.protocol import codec
from nmc.protocol.subjects import PREFIX, decode_token, encode_token

__all__ = ["JOB_END_PROTOCOL", "JOB_START_PROTOCOL", "JOBS_STREAM", "JobEnd", "JobError", "JobStart",
           "JobSubject", "check_job_id", "job_subject", "jobs_subjects", "parse_job_subject"]

JOBS_STREAM = "NMC_JOBS"
JOB_START_PROTOCOL = "nmc.job.start.v1"
JOB_END_PROTOCOL = "nmc.job.end.v1"
KINDS = ("start", "end", "reply")
_ID = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")


class JobError(ProtocolError, ValueError):
    """A job record or subject that does not follow the jobs contract; one line."""


def check_job_id(job_id: str) -> str:
    """A job id is one subject token of 1-64 letters, digits, `_` or `-` (request ids are hex)."""
    if not isinstance(job_id, str) or not _ID.match(job_id):
        raise JobError(f"not a job id: {job_id!r} (1-64 letters, digits, '_' or '-')")
    return job_id


def jobs_subjects(collective: str | None = None, caller: str | None = None, job_id: str | None = None) -> str:
    """The wildcard for every jobs subject, or of one collective, one caller's, one job's."""
    parts = [PREFIX, "jobs", encode_token(collective) if collective is not None else "*",
             encode_token(caller) if caller is not None else "*"]
    if job_id is not None:
        parts.append(check_job_id(job_id))
    return ".".join(parts) + ".>"


def job_subject(collective: str, caller: str, job_id: str, kind: str, identity: str | None = None) -> str:
    """`nmc.jobs.<collective>.<caller>.<job id>.<kind>` (+ `.<identity>` for a reply).

    `caller` is the certificate name of whoever ran the rpc (not `cert=...`).
    """
    if kind not in KINDS:
        raise JobError(f"unknown job subject kind {kind!r}")
    if (kind == "reply") != (identity is not None):
        raise JobError("a reply subject names its node, and only a reply subject does")
    subject = f"{PREFIX}.jobs.{encode_token(collective)}.{encode_token(caller)}.{check_job_id(job_id)}.{kind}"
    return subject if identity is None else f"{subject}.{encode_token(identity)}"


@dataclass(frozen=True)
class JobSubject:
    """A jobs subject, decoded."""

    collective: str
    caller: str
    job_id: str
    kind: str
    identity: str | None = None


def parse_job_subject(subject: str) -> JobSubject:
    """The parts of a jobs subject; JobError when it is not one."""
    parts = subject.split(".")
    if len(parts) not in (6, 7) or parts[:2] != [PREFIX, "jobs"] or parts[5] not in KINDS:
        raise JobError(f"not a jobs subject: {subject!r}")
    if (parts[5] == "reply") != (len(parts) == 7):
        raise JobError(f"not a jobs subject: {subject!r}")
    try:
        return JobSubject(collective=decode_token(parts[2]), caller=decode_token(parts[3]),
                          job_id=check_job_id(parts[4]), kind=parts[5],
                          identity=decode_token(parts[6]) if len(parts) == 7 else None)
    except ValueError as exc:
        raise JobError(f"not a jobs subject: {subject!r} ({exc})") from exc


def _names(obj: Mapping[str, Any], name: str, what: str, *, optional: bool = False) -> tuple[str, ...] | None:
    value = obj.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise JobError(f"{what} field {name!r} must be a list of identities")
    return tuple(value)


@dataclass(frozen=True)
class JobStart:
    """What a job asked for: signed by its caller before the request goes out."""

    id: str
    collective: str
    caller: str  # certificate name
    agent: str
    action: str
    filter: str
    started: float  # unix time
    timeout: float  # seconds the job may take: `nmc jobs wait` gives up after started + timeout
    expected: tuple[str, ...] | None = None  # whom it waits for; None: a broadcast without a registry
    data: Mapping[str, Any] = field(default_factory=dict)  # the inputs, sensitive ones already "***"
    batch: int | None = None  # --batch size, if any

    def to_bytes(self) -> bytes:
        """The exact bytes the caller signs."""
        obj: dict[str, Any] = {
            "protocol": JOB_START_PROTOCOL, "id": self.id, "collective": self.collective, "caller": self.caller,
            "agent": self.agent, "action": self.action, "filter": self.filter, "started": self.started,
            "timeout": self.timeout, "data": dict(self.data),
        }
        if self.expected is not None:
            obj["expected"] = list(self.expected)
        if self.batch is not None:
            obj["batch"] = self.batch
        return codec.dumps(obj)

    @classmethod
    def from_bytes(cls, body: bytes) -> JobStart:
        """Parse and shape-check a start record (JobError with the reason)."""
        w = "job start record"
        obj = codec.loads_object(body, w, error=JobError)
        if obj.get("protocol") != JOB_START_PROTOCOL:
            raise JobError(f"{w} protocol must be {JOB_START_PROTOCOL!r}, got {obj.get('protocol')!r}")
        f, n = codec.field, codec.number
        batch = obj.get("batch")
        if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
            raise JobError(f"{w} field 'batch' must be a positive integer")
        return cls(id=check_job_id(f(obj, "id", str, w, error=JobError)),
                   collective=f(obj, "collective", str, w, error=JobError),
                   caller=f(obj, "caller", str, w, error=JobError), agent=f(obj, "agent", str, w, error=JobError),
                   action=f(obj, "action", str, w, error=JobError), filter=f(obj, "filter", str, w, error=JobError),
                   started=n(obj, "started", w, error=JobError), timeout=n(obj, "timeout", w, error=JobError),
                   expected=_names(obj, "expected", w, optional=True),
                   data=f(obj, "data", dict, w, error=JobError), batch=batch)


@dataclass(frozen=True)
class JobEnd:
    """How a job ended, as the client that gathered it saw it: signed by the caller."""

    id: str
    caller: str
    ended: float
    answered: tuple[str, ...]
    missing: tuple[str, ...]
    request_ids: tuple[str, ...] = ()  # one per batch
    # How many of the replies the caller gathered were OK and failed, as it saw them (signed with the rest):
    # `nmc jobs list` shows them without reading every node's reply. None: not recorded (the list reads the replies).
    ok: int | None = None
    failed: int | None = None

    def to_bytes(self) -> bytes:
        """The exact bytes the caller signs."""
        body: dict[str, Any] = {"protocol": JOB_END_PROTOCOL, "id": self.id, "caller": self.caller,
                                "ended": self.ended, "answered": list(self.answered), "missing": list(self.missing),
                                "request_ids": list(self.request_ids)}
        if self.ok is not None and self.failed is not None:
            body.update(ok=self.ok, failed=self.failed)
        return codec.dumps(body)

    @classmethod
    def from_bytes(cls, body: bytes) -> JobEnd:
        """Parse and shape-check an end record (JobError with the reason)."""
        w = "job end record"
        obj = codec.loads_object(body, w, error=JobError)
        if obj.get("protocol") != JOB_END_PROTOCOL:
            raise JobError(f"{w} protocol must be {JOB_END_PROTOCOL!r}, got {obj.get('protocol')!r}")
        answered, missing = _names(obj, "answered", w), _names(obj, "missing", w)
        ids = obj.get("request_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise JobError(f"{w} field 'request_ids' must be a list of request ids")
        counts = [_count(obj, name, w) for name in ("ok", "failed")]
        if (counts[0] is None) != (counts[1] is None):
            raise JobError(f"{w} has 'ok' and 'failed' together or neither")
        return cls(id=check_job_id(codec.field(obj, "id", str, w, error=JobError)),
                   caller=codec.field(obj, "caller", str, w, error=JobError),
                   ended=codec.number(obj, "ended", w, error=JobError),
                   answered=answered or (), missing=missing or (), request_ids=tuple(ids),
                   ok=counts[0], failed=counts[1])


def _count(obj: Mapping[str, Any], name: str, what: str) -> int | None:
    """An optional count: a non-negative integer (never true/false), or None when absent."""
    if name not in obj:
        return None
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise JobError(f"{what} field '{name}' must be a count (an integer >= 0)")
    return value


def expected_names(names: Sequence[str] | None) -> tuple[str, ...] | None:
    """Sorted, de-duplicated identities (None stays None)."""
    return None if names is None else tuple(sorted(set(names)))
