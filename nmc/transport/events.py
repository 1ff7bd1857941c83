"""Publishing a lifecycle event: sign its bytes, one core publish, no acknowledgement (docs/events.md).

Events are best-effort: a core publish without a reply subject, so nothing
waits for the stream NMC_EVENTS (if any) and no broker answer can be aimed
at another subject (nmc.security.permissions, rule 2). Audit records are the
durable trail, not events. A failed publish is logged, never raised: an event
never stops a node or a service.
"""

from __future__ import annotations

import structlog
from nats.aio.client import Client as NATS

from nmc.protocol.events import CloudEvent
from nmc.protocol.subjects import event_subject
from nmc.security import Signer

__all__ = ["publish_event"]

log = structlog.get_logger("nmc.events")


async def publish_event(nc: NATS | None, signer: Signer, event: CloudEvent, *, flush: bool = False) -> bool:
    """Sign and publish `event` on its subject; whether it was handed to the connection.

    `flush`: wait until the broker has it (a last event before the connection closes).
    """
    if nc is None or nc.is_closed:
        return False
    body = event.to_bytes()
    try:
        await nc.publish(event_subject(event.collective, event.kind, event.identity), body,
                         headers=signer.headers(body))
        if flush:
            await nc.flush(timeout=2)
    except Exception as exc:  # noqa: BLE001 - nats-py raises many types; an event must never stop its publisher
        log.warning("event_publish_failed", kind=event.kind, error=str(exc) or type(exc).__name__)
        return False
    return True
