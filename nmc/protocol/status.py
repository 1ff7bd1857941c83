"""Reply status codes, MCollective's numbering so operators' habits carry over."""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(enum.IntEnum):
    """The status a node puts in every reply (PROTOCOL.md section 4)."""

    OK = 0
    ABORTED = 1  # also: not authorized
    UNKNOWN_ACTION = 2
    MISSING_DATA = 3
    INVALID_DATA = 4
    UNKNOWN_ERROR = 5

    @property
    def label(self) -> str:
        """The human name MCollective printed for this code."""
        return _LABELS[self]


_LABELS = {
    Status.OK: "OK",
    Status.ABORTED: "Aborted",
    Status.UNKNOWN_ACTION: "Unknown Action",
    Status.MISSING_DATA: "Missing Data",
    Status.INVALID_DATA: "Invalid Data",
    Status.UNKNOWN_ERROR: "Unknown Error",
}
