"""Discover, then call (in batches when asked): the one sequence every fleet action goes through.

`nmc rpc`, the `nmc puppet` commands, `nmc facts` / `nmc inventory` and a
Python program all run an action the same way: find the nodes by the chosen
method (`Targeting`), stop when nobody was found (nothing is sent), then
publish once to exactly those nodes, or batch by batch with `batch`. Kept
here so the order, and what "nobody found" means, exist once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nmc.client.batch import call_in_batches, parse_batch
from nmc.client.discovery import Targeting, discover
from nmc.client.fleet import CallResult, FleetClient

__all__ = ["run_action"]


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
