"""Batched RPC: at most N nodes busy at once (MCollective's --batch / --batch-sleep).

Each batch is addressed node by node (direct subjects), so only the nodes
of the current batch receive the request; the next batch starts when every
node of this one answered, or was found dead, or the timeout passed.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from nmc.errors import ClientError
from nmc.client.fleet import CallResult, FleetClient, NodeResult

__all__ = ["BatchError", "call_in_batches", "parse_batch"]

log = structlog.get_logger("nmc.client")

_BATCH = re.compile(r"\A([1-9][0-9]*)(%?)\Z")


class BatchError(ClientError, ValueError):
    """A --batch value that is not N or N%."""


def parse_batch(spec: str, total: int) -> int:
    """`3` -> 3; `25%` of 20 nodes -> 5 (at least 1)."""
    m = _BATCH.match(spec.strip())
    if m is None or (m.group(2) and int(m.group(1)) > 100):
        raise BatchError(f"--batch takes N or N% (1-100%), got {spec!r}")
    n = int(m.group(1))
    return max(1, math.ceil(total * n / 100)) if m.group(2) else n


async def call_in_batches(fc: FleetClient, agent: str, action: str, data: Mapping[str, Any], *,
                          identities: Sequence[str], size: int, sleep: float = 0.0, filter_expr: str = "",
                          timeout: float | None = None,
                          on_batch: Callable[[int, int, CallResult], None] | None = None,
                          job: str | None = None) -> CallResult:
    """Run the action on `identities`, `size` nodes at a time; one merged CallResult."""
    names = sorted(set(identities))
    batches = [names[i:i + size] for i in range(0, len(names), size)]
    started = time.monotonic()
    results: list[NodeResult] = []
    missing: list[str] = []
    request_ids: list[str] = []
    dropped = 0
    for index, batch in enumerate(batches):
        part = await fc.call(agent, action, data, filter_expr=filter_expr, expect=batch, direct=True,
                             timeout=timeout, job=job)
        results.extend(part.results)
        missing.extend(part.no_response)
        dropped += part.dropped
        request_ids.append(part.request_id)
        # With --debug, the moment each batch ended and who stayed silent (the fault tests wait on this line).
        log.debug("batch_finished", batch=index + 1, batches=len(batches), replies=len(part.results),
                  no_response=list(part.no_response))
        if on_batch is not None:
            on_batch(index + 1, len(batches), part)
        if sleep > 0 and index + 1 < len(batches):
            await asyncio.sleep(sleep)  # the operator asked for a pause between batches
    return CallResult(request_id=",".join(request_ids), agent=agent, action=action,
                      subject=f"{len(batches)} batches of at most {size}", results=tuple(results),
                      discovered=tuple(names), no_response=tuple(sorted(missing)),
                      elapsed=time.monotonic() - started, dropped=dropped)
