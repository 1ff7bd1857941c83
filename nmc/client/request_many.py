"""Scatter-gather over NATS: one request, many replies (ADR-47 "request many").

nats-py only offers `request()`, which returns the first reply, so nmc builds
request-many itself on a plain subscription, with the semantics of ADR-47
(nats-architecture-and-design):

- a fresh inbox is subscribed BEFORE the request is published with it as the
  reply subject, so no early reply can be missed;
- the wait for the first reply uses the whole `timeout`; after it, each wait
  uses `min(stall_now, remaining)` when `stall` is set, so gathering ends soon
  after the fleet goes quiet instead of always waiting the full timeout.
  `stall_now` adapts to how the replies arrive (`adaptive_stall`): it is never
  less than `stall`, at least `_GAP_FACTOR` times the longest gap seen between
  two replies, and at least `_AGE_FACTOR` of the time since publishing.
  A small fleet that answers within milliseconds ends `stall` after its last
  reply, as before; thousands of nodes sharing a few CPUs answer in bursts with
  pauses longer than `stall` between them, and a fixed stall ended gathering in
  the first pause (54 of 5,000 simulated nodes found in one run; on a busier
  machine the first of 5,000 replies came 18 s after publishing, the next
  ones in bursts seconds apart);
- gathering stops after `max_count` replies or when `timeout` is used up;
- nmc departs from ADR-47 where any responder could end everybody's gathering
  (docs/protocol.md, "Gathering and unsigned messages"). A sentinel (an empty
  message) is dropped with a warning: nmc nodes never send one, and honouring it
  let one compromised node end every client's gathering at once. A 503 "no
  responders" status that arrives first is only a hint: nats-server sends it
  when nothing subscribed, but a subscribed node can send the same bytes. So
  gathering waits `no_responders_grace` longer, and only if no other message
  arrives ends with `NoRespondersError`; a 503 after anything else is dropped.
  With `publish_to`, each target gets its own unguessable reply subject, so a
  503 names the one target that had no subscriber (it is yielded with `subject`
  set to that target) and no node can speak for another;
- only time spent waiting counts against `timeout` and `stall`: time the
  consumer spends between two replies does not (ADR-47 "callback timing"),
  and replies that arrived meanwhile are handed over without waiting;
- the inbox is always unsubscribed at the end.

The caller may stop early (e.g. once every discovered node has answered).
Wrap the generator in `contextlib.aclosing` so the subscription is removed
at once rather than whenever the abandoned generator is garbage-collected::

    async with contextlib.aclosing(request_many(nc, subject, data, timeout=5, stall=0.2)) as replies:
        async for msg in replies:
            if seen(msg) == expected:
                break
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from nmc.errors import ClientError

__all__ = ["NoRespondersError", "Publication", "adaptive_stall", "is_no_responders", "request_many"]

log = structlog.get_logger("nmc.client")

# The status header nats-server puts on its "no responders" message (nats-py
# delivers it to a plain subscription as a Msg with an empty payload).
_STATUS_HEADER = "Status"
_NO_RESPONDERS = "503"


@dataclass(frozen=True)
class Publication:
    """One directly addressed publish of a request: its subject, payload and headers."""

    subject: str
    payload: bytes
    headers: dict[str, str] | None = None


def is_no_responders(msg: Msg) -> bool:
    """True for the server's 503 "no responders" status message."""
    return not msg.data and msg.headers is not None and msg.headers.get(_STATUS_HEADER) == _NO_RESPONDERS


class NoRespondersError(ClientError):
    """Nothing was subscribed to the subject when the request was published."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"no responders on {subject}: no node is subscribed (is any node running in this collective?)")


# How much longer than what was already seen a pause may be before gathering ends (adaptive_stall).
_GAP_FACTOR = 2.0
_AGE_FACTOR = 0.5


def adaptive_stall(stall: float, longest_gap: float, since_publish: float) -> float:
    """How long to wait for the next reply before deciding the fleet has gone quiet.

    `stall`: the configured minimum; `longest_gap`: the longest pause between two replies so
    far; `since_publish`: seconds spent waiting since the request went out. A fleet that has
    paused for 0.4 s once may pause that long again, and one whose replies are still arriving
    2 s in (or only began then) is slow enough that a pause of a second says little; so the
    wait grows with both, and with neither for a fleet that answers within milliseconds.
    """
    return max(stall, _GAP_FACTOR * longest_gap, _AGE_FACTOR * since_publish)


def _validate(timeout: float, stall: float | None, max_count: int | None) -> float | None:
    """Check the limits; return the effective stall (None when it cannot shorten anything)."""
    if not timeout > 0:
        raise ValueError(f"request timeout must be positive, got {timeout}")
    if stall is not None and stall < 0:
        raise ValueError(f"stall must not be negative, got {stall}")
    if max_count is not None and max_count < 1:
        raise ValueError(f"max_count must be at least 1, got {max_count}")
    # ADR-47: a zero stall, or one at least as long as the timeout, is the same as none.
    if stall is None or stall == 0 or stall >= timeout:
        return None
    return stall


async def request_many(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    headers: dict[str, str] | None = None,
    timeout: float,
    stall: float | None = None,
    max_count: int | None = None,
    publish_to: Sequence[str | Publication] | None = None,
    no_responders_grace: float = 0.3,
) -> AsyncGenerator[Msg, None]:
    """Publish one request and yield the replies as they arrive (ADR-47 request many).

    With `publish_to`, the request is published to each of those subjects (direct
    addressing); an entry may be a `Publication` with a payload and headers of its
    own. A 503 then means "that one target had no responder": it is yielded with
    `subject` set to that target, instead of ending the gathering (callers can
    count a dead node as answered-for).
    """
    effective_stall = _validate(timeout, stall, max_count)
    # Our own unbounded queue filled by a callback: one hop per reply, no task
    # per reply (nats-py's next_msg and message iterator each create one).
    replies: asyncio.Queue[Msg] = asyncio.Queue()

    async def enqueue(msg: Msg) -> None:
        replies.put_nowait(msg)

    inbox = nc.new_inbox()
    # Direct addressing: one reply subject per target, `<inbox>.<random>`, so a message on it
    # comes from the broker or that target alone (the others never see it).
    targets: dict[str, str] = {}
    if publish_to is not None:
        sub = await nc.subscribe(f"{inbox}.*", cb=enqueue)
    else:
        sub = await nc.subscribe(inbox, cb=enqueue)
    try:
        if publish_to is None:
            await nc.publish(subject, payload, reply=inbox, headers=headers)
        for entry in publish_to or ():
            pub = entry if isinstance(entry, Publication) else Publication(entry, payload, headers)
            reply = f"{inbox}.{secrets.token_hex(8)}"
            targets[reply] = pub.subject
            await nc.publish(pub.subject, pub.payload, reply=reply, headers=pub.headers)
        waited = 0.0
        count = 0
        hinted = False  # a first-message 503 seen: "nobody there", unless something else arrives
        # Waiting time (the clock `timeout` runs on) at the latest reply, and the longest pause
        # between two replies: with the time waited so far, what the adaptive stall learns from.
        last_at = longest_gap = 0.0
        while max_count is None or count < max_count:
            if replies.empty():
                remaining = timeout - waited
                if remaining <= 0:
                    break
                if count == 0 and hinted:
                    wait = min(no_responders_grace, remaining)
                elif count == 0 or effective_stall is None:
                    wait = remaining
                else:
                    wait = min(adaptive_stall(effective_stall, longest_gap, waited) - (waited - last_at), remaining)
                started = time.monotonic()
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        msg = await replies.get()
                except TimeoutError:
                    break
                finally:
                    waited += time.monotonic() - started
            else:
                msg = replies.get_nowait()
            if not msg.data and not msg.headers:
                log.warning("reply_dropped", subject=subject, reason="empty message (no nmc node sends one)")
                continue
            if is_no_responders(msg):
                if publish_to is not None:
                    if msg.subject in targets:
                        msg.subject = targets.pop(msg.subject)
                        yield msg
                    continue
                if count == 0 and not hinted:
                    hinted = True
                else:
                    log.warning("reply_dropped", subject=subject,
                                reason="'no responders' status after other messages (not from the broker)")
                continue
            longest_gap, last_at = max(longest_gap, waited - last_at if count else 0.0), waited
            count += 1
            yield msg
        if hinted and count == 0:
            raise NoRespondersError(subject)
    finally:
        await _unsubscribe(sub)


async def _unsubscribe(sub: Subscription) -> None:
    """Remove the inbox subscription; a closed or draining connection already dropped it."""
    try:
        await sub.unsubscribe()
    except nats.errors.Error:
        # ConnectionClosed/Draining/BadSubscription: nothing left to clean up, and
        # raising here would hide the exception that ended the gathering.
        pass
