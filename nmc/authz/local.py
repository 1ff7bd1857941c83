"""`authz.mode = local`: the node evaluates the policy files itself (sites without the policy service)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import structlog

from nmc.authz.hooks import Decision
from nmc.authz.policyset import PolicySet
from nmc.authz.watch import PolicyWatcher
from nmc.transport.companion import NodeView

__all__ = ["LocalAuthorizer"]

log = structlog.get_logger("nmc.authz")


class LocalAuthorizer:
    """Decides from a PolicySet in this process; with a directory it is also a node Companion that reloads it."""

    def __init__(self, policies: PolicySet, *, watcher: PolicyWatcher | None = None) -> None:
        self._fixed = policies
        self._watcher = watcher

    @classmethod
    def from_directory(cls, directory: Path, *, poll_interval: float = 1.0) -> LocalAuthorizer:
        """Load `directory` now and, once started as a companion, re-read it when files change."""
        watcher = PolicyWatcher(directory, interval=poll_interval)
        return cls(watcher.load_now(), watcher=watcher)

    @property
    def policies(self) -> PolicySet:
        """The policies in force right now."""
        return self._watcher.policies if self._watcher is not None else self._fixed

    async def authorize(self, *, caller: str, agent: str, action: str, identity: str,
                        facts: Mapping[str, Any], classes: Collection[str], facts_version: int,
                        request_id: str) -> Decision:
        """Evaluate the local policy files; never raises."""
        decision = self.policies.decide(caller=caller, agent=agent, action=action, facts=facts, classes=classes,
                                        identity=identity)
        log.debug("authz_decision", mode="local", request_id=request_id, caller=caller, agent=agent, action=action,
                  allowed=decision.allowed, rule=decision.rule, reason=decision.reason)
        return decision

    async def reload_now(self) -> bool:
        """Re-read the policy directory at once; True when something changed."""
        return await self._watcher.check() if self._watcher is not None else False

    # Companion
    async def start(self, node: NodeView) -> None:
        """Start watching the policy directory."""
        if self._watcher is not None:
            self._watcher.start()

    async def facts_changed(self, node: NodeView) -> None:
        """Nothing cached: every request is evaluated against the node's current facts."""

    async def stop(self) -> None:
        """Stop watching."""
        if self._watcher is not None:
            await self._watcher.stop()
