"""Registry discovery: read the nodes' JetStream key-value records instead of broadcasting.

A broadcast ends on a stall timer because nobody knows how many nodes will
answer. The registry (kept current by every node, see
`nmc.services.registry`) says who is there, so discovery is one read with a
definite end, and an rpc afterwards knows exactly whom to wait for and can
name the registered nodes that stayed silent.

The read makes no consumer: one `STREAM.INFO` lists the collective's keys
(`subjects_filter`), then one `STREAM.MSG.GET` per key fetches its last
value, many at a time. A consumer would be faster for thousands of nodes,
but nats-server checks neither a push consumer's deliver subject nor a pull
request's reply subject against the reader's permissions, so whoever may
create one can have stored records delivered onto any subject
(nmc.security.permissions, rule 2). `STREAM.MSG.GET` answers with the
server's JSON, the record inside. The filter is then evaluated here, on the
records, with the same `matches` the nodes use.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS

from nmc.errors import ClientError, reason_of
from nmc.protocol.filter import Node as FilterTree
from nmc.protocol.filter import matches, parse
from nmc.protocol.registry import (
    DEFAULT_BUCKET,
    RecordError,
    RegistryEntry,
    check_bucket,
    collective_keys,
)

__all__ = ["RegistryEntry", "RegistryError", "RegistrySnapshot", "read_registry", "registry_discover",
           "select_entries"]

log = structlog.get_logger("nmc.registry")
# Key reads in flight at once: enough to hide the round trip, few enough not to queue up in the server's API pool.
_IN_FLIGHT = 64
# Headers that make a KV message a removal rather than a value (ADR-8; the marker is nats-server 2.11+).
_KV_OPERATION, _REMOVED, _MARKER = "KV-Operation", ("DEL", "PURGE"), "Nats-Marker-Reason"
# nats-server's error codes: no such stream; no message (the key expired between listing and reading it).
_STREAM_NOT_FOUND, _NO_MESSAGE = 10059, 10037


class RegistryError(ClientError):
    """The registry cannot be read (no bucket, no JetStream, timeout); one line, names the bucket."""

    def __init__(self, bucket: str, reason: str) -> None:
        super().__init__(reason)
        self.bucket = bucket


@dataclass(frozen=True)
class RegistrySnapshot:
    """Every valid record of one collective at the time of the read, and what the read cost."""

    entries: tuple[RegistryEntry, ...]
    skipped: int  # malformed records left out (each logged)
    elapsed: float  # seconds for the whole read
    last_record: float  # seconds from the start of the read to the arrival of the last record


def _check_entry(key: str, value: bytes) -> RegistryEntry:
    entry = RegistryEntry.from_bytes(value)
    if entry.key != key:
        # A record under another node's key would let one node hide or impersonate another.
        raise RecordError(f"record for {entry.identity!r} in {entry.collective!r} is stored under another key")
    return entry


def _headers(encoded: str | None) -> Mapping[str, str]:
    """The headers of a stored message (`hdrs` of a STREAM.MSG.GET answer: base64 of `NATS/1.0` lines)."""
    if not encoded:
        return {}
    lines = base64.b64decode(encoded).decode("utf-8", "replace").split("\r\n")[1:]
    return dict((k.strip(), v.strip()) for k, sep, v in (line.partition(":") for line in lines) if sep)


def _is_removal(headers: Mapping[str, str]) -> bool:
    return headers.get(_KV_OPERATION) in _REMOVED or _MARKER in headers


class _Reader:
    """One read of one bucket: the JetStream API calls, each bounded by the read's deadline."""

    def __init__(self, nc: NATS, bucket: str, deadline: float, timeout: float) -> None:
        self.nc, self.bucket, self.deadline, self.timeout = nc, bucket, deadline, timeout
        self.stream = f"KV_{bucket}"

    async def call(self, verb: str, request: Mapping[str, Any], deadline: float | None = None) -> dict[str, Any]:
        remaining = (self.deadline if deadline is None else min(deadline, self.deadline)) - time.monotonic()
        if remaining <= 0:
            raise RegistryError(self.bucket, f"reading registry bucket {self.bucket!r} took longer than "
                                             f"{self.timeout:g} s")
        try:
            msg = await self.nc.request(f"$JS.API.STREAM.{verb}.{self.stream}", json.dumps(request).encode(),
                                        timeout=remaining)
            answer = json.loads(msg.data)
        except nats.errors.TimeoutError:
            raise RegistryError(self.bucket, f"reading registry bucket {self.bucket!r} took longer than "
                                             f"{self.timeout:g} s") from None
        except (nats.errors.Error, TimeoutError, ValueError) as exc:
            raise RegistryError(self.bucket, f"cannot read registry bucket {self.bucket!r}: "
                                             f"{str(exc) or type(exc).__name__} (is JetStream enabled on the broker?)"
                                ) from exc
        if not isinstance(answer, dict):
            raise RegistryError(self.bucket, f"cannot read registry bucket {self.bucket!r}: not a JetStream answer")
        return answer

    def failed(self, answer: Mapping[str, Any]) -> RegistryError:
        error = answer.get("error") or {}
        if error.get("err_code") == _STREAM_NOT_FOUND:
            return RegistryError(self.bucket, f"no registry bucket {self.bucket!r}: are the nodes started with "
                                              "registerinterval > 0?")
        return RegistryError(self.bucket, f"cannot read registry bucket {self.bucket!r}: "
                                          f"{error.get('description') or answer}")

    async def keys(self, subjects: str, deadline: float | None = None) -> list[str]:
        """The subjects (keys) of the bucket under `subjects`, every page of them (by `deadline` if given)."""
        found: list[str] = []
        while True:
            answer = await self.call("INFO", {"subjects_filter": subjects, "offset": len(found)}, deadline)
            if "error" in answer:
                raise self.failed(answer)
            page = list(((answer.get("state") or {}).get("subjects") or {}))
            found += page
            if not page or len(found) >= int(answer.get("total") or 0):
                return found

    async def last(self, subject: str) -> Mapping[str, Any] | None:
        """The stored message of `subject` (the server's JSON), or None when there is none any more."""
        answer = await self.call("MSG.GET", {"last_by_subj": subject})
        if "error" in answer:
            if (answer.get("error") or {}).get("err_code") == _NO_MESSAGE:
                return None
            raise self.failed(answer)
        message = answer.get("message")
        return message if isinstance(message, dict) else None


async def read_registry(nc: NATS, collective: str, *, bucket: str = DEFAULT_BUCKET,
                        timeout: float = 5.0, list_timeout: float | None = None) -> RegistrySnapshot:
    """Every current, well-formed record of `collective`; RegistryError if the bucket cannot be read.

    `timeout` bounds the whole read; `list_timeout`, if shorter, the first answer (the list of
    keys): a broker that will not answer at all (no permission, a JetStream that is down) is
    then given up on sooner than a large registry that is merely slow to read.
    """
    try:
        check_bucket(bucket)
    except ValueError as exc:
        raise RegistryError(bucket, str(exc)) from exc
    started = time.monotonic()
    reader = _Reader(nc, bucket, started + timeout, timeout)
    prefix = f"$KV.{bucket}."
    subjects = await reader.keys(f"{prefix}{collective_keys(collective)}",
                                 None if list_timeout is None else started + list_timeout)
    gate = asyncio.Semaphore(_IN_FLIGHT)
    last_record = 0.0

    async def fetch(subject: str) -> Mapping[str, Any] | None:
        nonlocal last_record
        async with gate:
            message = await reader.last(subject)
        last_record = time.monotonic() - started
        return message

    tasks = [asyncio.ensure_future(fetch(s)) for s in subjects]
    try:
        messages = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # one failed read fails the whole read: stop the others
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    records: dict[str, RegistryEntry] = {}
    skipped = 0
    for subject, message in zip(subjects, messages):
        if message is None or _is_removal(_headers(message.get("hdrs"))):
            continue
        key = subject[len(prefix):]
        try:
            records[key] = _check_entry(key, base64.b64decode(message.get("data") or ""))
        except (RecordError, ValueError) as exc:
            skipped += 1
            log.warning("registry_record_skipped", bucket=bucket, key=key, reason=reason_of(exc))
    return RegistrySnapshot(entries=tuple(records.values()), skipped=skipped,
                            elapsed=time.monotonic() - started, last_record=last_record)


def select_entries(entries: Iterable[RegistryEntry], tree: FilterTree, *, max_age: float | None = None,
                   now: float | None = None) -> list[RegistryEntry]:
    """The entries a filter selects, fresher than `max_age` seconds if given, sorted by identity."""
    now = time.time() if now is None else now
    chosen = [e for e in entries
              if (max_age is None or now - e.last_seen <= max_age)
              and matches(tree, e.facts, e.classes, e.identity, e.agents)]
    return sorted(chosen, key=lambda e: e.identity)


async def registry_discover(nc: NATS, collective: str, filter_expr: str, *, bucket: str = DEFAULT_BUCKET,
                            max_age: float | None = None, timeout: float = 5.0) -> list[RegistryEntry]:
    """The registered nodes of `collective` that `filter_expr` selects, without a broadcast."""
    tree = parse(filter_expr)  # a syntax error fails before any I/O
    snapshot = await read_registry(nc, collective, bucket=bucket, timeout=timeout)
    found = select_entries(snapshot.entries, tree, max_age=max_age)
    log.debug("registry_discovered", bucket=bucket, records=len(snapshot.entries), skipped=snapshot.skipped,
              found=len(found), elapsed_ms=round(snapshot.elapsed * 1000, 1))
    return found
