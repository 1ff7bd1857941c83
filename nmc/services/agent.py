"""The agent runtime: how an agent declares actions and how the node calls them.

An agent is a class with `name`, `description`, `version` and methods marked
with `@action(...)`. The decorator records the action's DDL next to its
code, so the metadata the client validates against cannot drift from what
the node runs. docs/agents.md is the guide to writing one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Awaitable, Callable, ClassVar, Mapping, Protocol

from nmc.protocol.ddl import ActionSpec, AgentSpec, Aggregate, Input, Output
from nmc.protocol.status import Status
from nmc.services.facts import NodeFacts

__all__ = ["ActionFailed", "ActionRequest", "Agent", "NodeContext", "action"]

_SPEC_ATTR = "__nmc_action__"
_SPEC_CACHE = "_nmc_spec_cache"  # (name, description, version), AgentSpec: see Agent.spec


class ActionFailed(Exception):
    """Raised by an action to answer with a non-OK status and still return data."""

    def __init__(self, message: str, *, status: Status = Status.ABORTED, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.data = dict(data or {})


class NodeContext(Protocol):
    """What an agent may know about the node it runs on."""

    identity: str
    collective: str
    started: float

    def snapshot(self) -> NodeFacts:
        """The node's current facts and classes."""

    def agent_specs(self) -> list[AgentSpec]:
        """DDLs of every loaded agent."""

    def stats(self) -> dict[str, Any]:
        """Request counters (daemon_stats)."""

    async def emit_event(self, kind: str, data: Mapping[str, Any]) -> bool:
        """Publish a node lifecycle event (docs/events.md) if the node publishes events; whether it went out."""


@dataclass(frozen=True)
class ActionRequest:
    """What an action is called with: validated inputs and who asked."""

    data: Mapping[str, Any]
    caller: str
    request_id: str
    sender: str


def action(description: str = "", *, inputs: tuple[Input, ...] = (), display: str = "always",
           timeout: float | None = None, outputs: tuple[Output, ...] = (),
           aggregate: tuple[Aggregate, ...] = (),
           readonly: bool = False) -> Callable[[Callable[..., Awaitable[Mapping[str, Any]]]], Any]:
    """Mark an async method as an action and attach its DDL.

    `display` is the default of `nmc rpc --display`: always, ok (only OK replies) or failed;
    `timeout` (seconds) overrides the node's agent_timeout; missing `outputs` are filled with
    their defaults before the node replies; `aggregate` lists the summaries the client prints;
    `readonly=True` promises the action changes nothing, which lets a node answer it unsigned.
    A bad declaration raises ValueError here, when the agent's module is imported.
    """
    def mark(fn: Callable[..., Awaitable[Mapping[str, Any]]]) -> Any:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"action {fn.__name__} must be async")
        setattr(fn, _SPEC_ATTR, ActionSpec(name=fn.__name__, description=description, inputs=inputs,
                                           display=display, timeout=timeout, outputs=outputs,
                                           aggregates=aggregate, readonly=readonly))
        return fn
    return mark


class Agent:
    """Base class of every agent; subclasses set the ClassVars and add @action methods."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1.0.0"
    concurrency: ClassVar[int] = 0  # actions of this agent running at once on a node; 0 = no limit
    override: ClassVar[bool] = False  # a plugin agent may replace a built-in or earlier agent of the same name

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Checked when the class is defined, so a bad plugin fails while loading, not on its first request.
        if not isinstance(cls.concurrency, int) or isinstance(cls.concurrency, bool) or cls.concurrency < 0:
            raise ValueError(f"agent {cls.name or cls.__name__}: concurrency must be an integer >= 0 (0 = no limit)")

    def __init__(self, node: NodeContext, settings: Mapping[str, str] | None = None) -> None:
        self.node = node
        # The node's `plugin.<name>.*` values (keys without the prefix): how an agent is configured per node.
        self.settings: Mapping[str, str] = MappingProxyType(dict(settings or {}))

    async def emit_event(self, kind: str, data: Mapping[str, Any]) -> bool:
        """Publish a node lifecycle event of `kind` (docs/events.md) through the node; whether it went out.

        A no-op returning False when the node publishes no events (events.enabled = false)
        or the context has no way to (a test's stand-in for the node). Never raises.
        """
        emit = getattr(self.node, "emit_event", None)
        if emit is None:
            return False
        return bool(await emit(kind, data))

    @classmethod
    def spec(cls) -> AgentSpec:
        """The agent's DDL, collected from its @action methods.

        Collected once per class and kept (the node asks up to three times per request:
        audit records, action lookup), in the class's own namespace, so a subclass never
        reuses its parent's; kept together with name, description and version, so a class
        whose metadata is changed later (a test, a loader) is collected afresh.
        """
        key = (cls.name, cls.description, cls.version)
        cached = cls.__dict__.get(_SPEC_CACHE)
        if cached is not None and cached[0] == key:
            return cached[1]  # type: ignore[no-any-return]
        actions = {}
        for attr in dir(cls):
            fn = getattr(cls, attr, None)
            spec = getattr(fn, _SPEC_ATTR, None)
            if isinstance(spec, ActionSpec):
                actions[spec.name] = spec
        agent_spec = AgentSpec(name=cls.name, description=cls.description, version=cls.version, actions=actions)
        setattr(cls, _SPEC_CACHE, (key, agent_spec))
        return agent_spec

    def handler(self, action_name: str) -> Callable[[ActionRequest], Awaitable[Mapping[str, Any]]] | None:
        """The bound method for an action, or None when the agent has no such action."""
        fn = getattr(self, action_name, None)
        if fn is None or not isinstance(getattr(fn, _SPEC_ATTR, None), ActionSpec):
            return None
        return fn  # type: ignore[no-any-return]
