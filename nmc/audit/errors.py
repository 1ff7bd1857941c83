"""Exceptions of nmc.audit, each carrying the fields a caller needs to act on it.

The tree::

    NmcError (nmc.errors)
     +-- AuditUnavailable        (nmc.audit.hooks) auditing is required and no record could be kept
     +-- AuditError              base of everything below
          +-- AuditRecordError   bytes that are not a PROTOCOL.md section 6 record (`reason`)
          +-- AuditRecordRefused a record, but not a genuine one of the node it names (`reason`, `record`)
          +-- SpoolError         the local spool file cannot take or give back records (`path`, `reason`)
          |    +-- SpoolFull     the spool reached its size limit (`limit`)
          +-- SinkError          a sink could not write a record (`sink`, `reason`)
          |    +-- PositionError the audit service's position file cannot be read or saved (`sink`: its path)
          +-- AuditStreamError   the NMC_AUDIT stream could not be created, updated or read (`reason`)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nmc.errors import NmcError

__all__ = ["AuditError", "AuditRecordError", "AuditRecordRefused", "AuditStreamError", "PositionError", "SinkError",
           "SpoolError", "SpoolFull"]


class AuditError(NmcError):
    """Base class of nmc.audit's own errors (an NmcError: the CLI shows it as one `Error:` line)."""


class AuditRecordError(AuditError):
    """A message that is not a valid audit record."""


class AuditRecordRefused(AuditError):
    """A well-formed record that is not genuine: unsigned, badly signed, not by a node, or about another node.

    `record` is what it claims (the decoded dict), for `nmc audit --unverified`; never write it as genuine.
    """

    def __init__(self, reason: str, record: Mapping[str, Any]) -> None:
        super().__init__(reason)
        self.record = dict(record)


class SpoolError(AuditError):
    """The spool file could not be read or written."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(reason, where=f"audit spool {path}")
        self.path = path


class SpoolFull(SpoolError):
    """The spool holds `limit` bytes already; a further record would exceed it."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(path, f"spool is full ({limit} bytes, audit.spool_max_bytes)")
        self.limit = limit


class SinkError(AuditError):
    """A sink (file, syslog) failed to take records; nothing of the batch is acknowledged."""

    def __init__(self, sink: str, reason: str) -> None:
        super().__init__(reason, where=sink)
        self.sink = sink


class PositionError(SinkError):
    """The audit service's position file (nmc.audit.position) could not be read or saved.

    A SinkError: the position is the file sink's bookmark, and whoever reports a sink
    failure in one line (`nmc serve audit`, `nmc dev up`) reports this one too.
    """


class AuditStreamError(AuditError):
    """The NMC_AUDIT stream could not be set up or read."""
