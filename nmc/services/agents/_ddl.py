"""`@declared(DDL)`: mark an action method with the spec its agent's DDL module declares for it.

The built-in agents' DDLs live in nmc.protocol.ddls, so the client reads them
without importing agent code; this decorator is how the code is tied back to
them. A method the DDL does not declare is a ValueError when the agent's
module is imported, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nmc.protocol.ddl import AgentSpec
from nmc.services.agent import action

__all__ = ["declared"]


def declared(ddl: AgentSpec) -> Callable[[Callable[..., Awaitable[Mapping[str, Any]]]], Any]:
    """`action(...)` with everything taken from `ddl.actions[<method name>]`."""
    def mark(fn: Callable[..., Awaitable[Mapping[str, Any]]]) -> Any:
        spec = ddl.actions.get(fn.__name__)
        if spec is None:
            raise ValueError(f"agent {ddl.name}: method {fn.__name__} is not an action of its DDL "
                             f"(actions: {', '.join(sorted(ddl.actions))})")
        return action(spec.description, inputs=spec.inputs, display=spec.display, timeout=spec.timeout,
                      outputs=spec.outputs, aggregate=spec.aggregates, readonly=spec.readonly)(fn)
    return mark
