"""Signalling a child's whole process group: the one place the node does it.

The node starts every command it runs (facter, agents' commands) in a
process group of its own, because the helpers such a command starts
(facter's dmidecode, a package manager's scripts) hold its pipes open and
would outlive it. Stopping the command therefore signals the group, and a
group that is already gone, or was never ours to signal, is not an error.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["signal_group"]


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to process group `pgid`; a group that is gone (or not ours) is ignored."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
