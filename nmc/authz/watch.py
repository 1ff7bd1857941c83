"""Noticing policy file changes: poll the directory, re-parse when any byte changed (asyncio edge).

Polling the contents (not only mtimes) every second is cheap for a policy
directory of a few small files, works on every filesystem and never misses
a rewrite that lands in the same timestamp tick. A change is put in force
when two polls in a row read the same bytes (so within two intervals).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from nmc.authz.files import DirSnapshot, policy_set, read_policy_dir
from nmc.authz.policyset import PolicySet
from nmc.transport.tasks import cancel_and_wait

__all__ = ["PolicyWatcher", "log_policy_issues"]

log = structlog.get_logger("nmc.authz")

OnChange = Callable[[PolicySet], Awaitable[None]]


def log_policy_issues(policies: PolicySet, directory: Path) -> None:
    """One log line per problem, so an operator sees exactly which line makes an agent deny."""
    for issue in policies.issues:
        emit = log.error if issue.severity == "error" else log.warning
        emit("policy_issue", directory=str(directory), where=issue.where, severity=issue.severity,
             message=issue.message)


class PolicyWatcher:
    """Holds the current PolicySet of a directory and replaces it when the files change."""

    def __init__(self, directory: Path, *, interval: float = 1.0, on_change: OnChange | None = None) -> None:
        if not interval > 0:
            raise ValueError(f"poll interval must be positive, got {interval!r}")
        self.directory = directory
        self.interval = interval
        self._on_change = on_change
        self._snapshot: DirSnapshot | None = None
        self._pending: DirSnapshot | None = None  # a change seen once, applied when the next read agrees
        self.policies = PolicySet()
        self._task: asyncio.Task[None] | None = None

    def load_now(self) -> PolicySet:
        """Read and parse synchronously (at start-up, before anything is served)."""
        self._install(read_policy_dir(self.directory))
        return self.policies

    def _install(self, snapshot: DirSnapshot) -> None:
        self._snapshot = snapshot
        self.policies = policy_set(snapshot)
        log_policy_issues(self.policies, self.directory)
        log.info("policy_loaded", directory=str(self.directory), files=len(self.policies.files),
                 errors=len(self.policies.errors))

    async def check(self, *, settle: bool = False) -> bool:
        """Re-read the directory; if anything changed, re-parse and call on_change. True when it changed.

        With `settle`, a change is applied only once two reads in a row agree, so a file caught
        half-written (truncated, its later deny rules missing) is never put in force.
        """
        snapshot = await asyncio.to_thread(read_policy_dir, self.directory)
        if self._snapshot is not None and snapshot == self._snapshot:
            self._pending = None
            return False
        if settle and snapshot != self._pending:
            self._pending = snapshot
            return False
        self._pending = None
        self._install(snapshot)
        if self._on_change is not None:
            await self._on_change(self.policies)
        return True

    def start(self) -> None:
        """Poll in the background until stop()."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"policy-watch {self.directory}")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check(settle=True)
            except Exception:
                log.exception("policy_poll_failed", directory=str(self.directory))

    async def stop(self) -> None:
        """Stop polling."""
        await cancel_and_wait(self._task)
        self._task = None
