"""Discover, then call (in batches when asked): the one sequence every fleet action goes through.

`nmc rpc`, the `nmc puppet` commands, `nmc facts` / `nmc inventory` and a
Python program all run an action the same way: find the nodes by the chosen
method (`Targeting`), stop when nobody was found (nothing is sent), then
publish once to exactly those nodes, or batch by batch with `batch`. Kept
here so the order, and what "nobody found" means, exist once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from nmc.client.batch import call_in_batches, parse_batch
from nmc.client.discovery import Targeting, discover, registered_nodes
from nmc.client.fleet import CallResult, FleetClient

__all__ = ["ping", "run_action"]


async def ping(fc: FleetClient, filter_expr: str = "", *, method: str = "auto",
               timeout: float | None = None) -> CallResult:
    """Ping the nodes `filter_expr` matches: each one's verified reply, and who stayed silent.

    With the registry (`method` "auto", when it can be read), the client knows whom to
    expect: one publish on the routed subject, and gathering ends on the last expected reply
    instead of a stall timer; registered nodes that did not answer within `timeout`
    (default: the discovery timeout) are named in `no_response`. Without it ("broadcast"),
    gathering ends when replies stall, and nobody can be named as silent.
    """
    wait = timeout or fc.settings.discovery_timeout
    if method == "auto":
        method = fc.settings.discovery_method
    if method == "registry":
        method = "auto"  # ping asks the nodes anyway: the registry says whom to expect, never whom to skip
    expected = await registered_nodes(fc, filter_expr) if method == "auto" else None
    if expected is None:
        return await fc.discover(filter_expr, timeout=wait)
    result = await fc.call("rpcutil", "ping", {}, filter_expr=filter_expr, expect=expected, timeout=wait)
    if result.agent_unserved:
        # Nobody subscribed at all: every registered node is down (its record not yet expired).
        return dataclasses.replace(result, agent_unserved=False, no_response=tuple(sorted(expected)))
    return result


async def run_action(fc: FleetClient, agent: str, action: str, data: Mapping[str, Any] | None = None, *,
                     filter_expr: str = "", targeting: Targeting | None = None, discovery: bool = True,
                     batch: str | None = None, batch_sleep: float = 0.0, timeout: float | None = None,
                     on_batch: Callable[[int, int, CallResult], None] | None = None) -> CallResult | None:
    """Run `agent.action` on the nodes `filter_expr` and `targeting` pick; None when none were found.

    `discovery=False` skips discovery: one publish, gathering until replies
    stall (so nobody is named as silent). `batch` ("N" or "N%" of the nodes
    found; BatchError when malformed) addresses that many nodes at a time,
    the next batch starting when this one answered, `batch_sleep` seconds later.
    """
    inputs = data or {}
    if not discovery:
        return await fc.call(agent, action, inputs, filter_expr=filter_expr, timeout=timeout)
    found = await discover(fc, filter_expr, targeting or Targeting())
    if not found.identities:
        return None
    if batch is not None:
        return await call_in_batches(fc, agent, action, inputs, identities=found.identities, filter_expr=filter_expr,
                                     size=parse_batch(batch, len(found.identities)), sleep=batch_sleep,
                                     timeout=timeout, on_batch=on_batch)
    return await fc.call(agent, action, inputs, filter_expr=filter_expr, expect=found.identities,
                         direct=found.direct, timeout=timeout)
