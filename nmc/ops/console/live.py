"""The console's live updates: server-sent events for a running job and for new lifecycle events.

The browser opens one ``EventSource`` per page (static/console.js); the server polls
NATS for it with the console's reads only (``STREAM.INFO`` and ``STREAM.MSG.GET`` /
direct gets: the console role subscribes to nothing but its inbox) and sends
server-rendered, autoescaped HTML fragments. Each stream stops polling when its
client goes away, when the job is complete, or when the console stops; a client
gets at most `PER_CLIENT` streams at once, the console `TOTAL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from nmc.ops.console.data import ConsoleData, ConsoleQueryError

__all__ = ["HEARTBEAT", "PER_CLIENT", "POLL", "TOTAL", "LiveStreams", "events_stream", "job_stream", "sse"]

POLL = 0.5  # seconds between two looks at NATS per stream
HEARTBEAT = 15.0  # seconds between two comment lines on a quiet stream (finds closed connections, keeps proxies)
PER_CLIENT = 6  # streams one client address may hold open (a browser's connections per site)
TOTAL = 64  # streams the console serves at once
Render = Callable[..., str]
Failure = Callable[[web.Request, Exception], web.Response]


@dataclass
class LiveStreams:
    """The open streams by client address, and the console's stop signal every stream waits on."""

    per_client: int = PER_CLIENT
    total: int = TOTAL
    open: dict[str, int] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        """The console stops: every stream sends its last word and ends within one poll."""
        self.stopping.set()

    @contextlib.contextmanager
    def slot(self, request: web.Request) -> Iterator[None]:
        """Hold one stream for the request's client; 429 when it (or the console) has too many."""
        client = request.remote or "?"
        if self.open.get(client, 0) >= self.per_client or sum(self.open.values()) >= self.total:
            raise web.HTTPTooManyRequests(text="429: too many live streams open; close a console tab\n")
        if self.stopping.is_set():
            raise web.HTTPServiceUnavailable(text="503: the console is stopping\n")
        self.open[client] = self.open.get(client, 0) + 1
        try:
            yield
        finally:
            self.open[client] -= 1
            if not self.open[client]:
                del self.open[client]

    async def pause(self, seconds: float = POLL) -> bool:
        """Wait one poll; False when the console is stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return not self.stopping.is_set()


def sse(event: str, data: str, event_id: str | None = None) -> bytes:
    """One server-sent event. Every line break of `data` (CR, LF, CRLF: all three end an SSE line) becomes
    its own ``data:`` line, so no value in the fragment can start a field of its own (``event: end``)."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    fields = [f"event: {event}", *([f"id: {event_id}"] if event_id else []), *(f"data: {line}" for line in lines)]
    return ("\n".join(fields) + "\n\n").encode()


def _closed(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def _open(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream; charset=utf-8",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    return response


async def job_stream(request: web.Request, live: LiveStreams, data: ConsoleData, render: Render,
                     failure: Failure, headers: dict[str, str]) -> web.StreamResponse:
    """`results` (the job's live part, rendered) now and after each record the job stores, then `end`.

    Polls the job's subject count (one STREAM.INFO), and reads and verifies the job again only
    when it changed, or once its time is up. `end` says `complete`, or `stopped` when the
    console stops or NATS fails first; the page keeps what it last got. `headers`: the security
    headers (the middleware would set them too late: a stream's headers go out when it opens).
    """
    job_id = request.match_info["job_id"]
    page = int(request.query["page"]) if request.query.get("page", "").isdigit() else 1  # the page it shows
    with live.slot(request):
        try:
            job = await data.job(job_id, request.query.get("caller") or None, page=page)
            marker = await data.job_marker(job_id, job["caller"])
        except Exception as exc:  # noqa: BLE001 - the same answers as /api/jobs/{id}
            return failure(request, exc)
        response = await _open(request, headers)
        verified: dict[str, Any] = {}  # replies this stream verified: each new record reads only what is new
        try:
            await response.write(sse("results", render(result=job)))
            quiet = time.monotonic()
            while not job["complete"] and not _closed(request) and await live.pause():
                seen = await data.job_marker(job_id, job["caller"])
                if seen != marker or time.time() >= job["started"] + job["timeout"]:
                    marker, job = seen, await data.job(job_id, job["caller"], page=page, seen=verified)
                    if job["complete"]:  # the last rendering is of the job read whole and verified afresh
                        job = await data.job(job_id, job["caller"], page=page)
                    await response.write(sse("results", render(result=job)))
                    quiet = time.monotonic()
                elif time.monotonic() - quiet >= HEARTBEAT:
                    await response.write(b": waiting\n\n")
                    quiet = time.monotonic()
            await response.write(sse("end", "complete" if job["complete"] else "stopped"))
        except ConnectionError:
            pass  # the client went away: nothing more to send
        except Exception:  # noqa: BLE001 - NATS failed mid-stream: say so; the page keeps what it has
            with contextlib.suppress(ConnectionError):
                await response.write(sse("end", "stopped"))
        return response


async def events_stream(request: web.Request, live: LiveStreams, data: ConsoleData, render: Render,
                        failure: Failure, headers: dict[str, str]) -> web.StreamResponse:
    """`event` (one rendered table row, its stream sequence as the id) for each event stored from now on.

    Starts after ``?after=`` (the page says where its table ends) or the ``Last-Event-ID`` an
    EventSource sends when it reconnects, else after the newest stored event; filtered by
    ``?kind=``, ``?node=`` and ``?filter=`` as the page is. Runs until the client goes or the console stops.
    """
    q = request.query
    kind, node, chosen = q.get("kind") or None, q.get("node") or None, q.get("filter", "")
    with live.slot(request):
        try:
            after = _position(request.headers.get("Last-Event-ID") or q.get("after"))
            if after is None:
                after = await data.events_position()
        except Exception as exc:  # noqa: BLE001 - a bad position or an unreadable stream, as /api/events says
            return failure(request, exc)
        response = await _open(request, headers)
        quiet = time.monotonic()
        with contextlib.suppress(ConnectionError):
            while not _closed(request) and await live.pause():
                try:
                    found, after = await data.events_after(after, kind=kind, identity=node, filter_text=chosen)
                except Exception:  # noqa: BLE001 - NATS hiccup: try again at the next poll
                    found = []
                for event in found:
                    await response.write(sse("event", render(e=event), str(event["seq"])))
                    quiet = time.monotonic()
                if time.monotonic() - quiet >= HEARTBEAT:
                    await response.write(b": waiting\n\n")
                    quiet = time.monotonic()
            await response.write(sse("end", "stopped"))
        return response


def _position(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise ConsoleQueryError("after must be a stream sequence number")
    return int(text)
