"""The console's aiohttp application: pages, the JSON API under /api/, the access token, security headers.

Access: every request, the stylesheet included, needs the token (``?token=`` once, which
sets an HttpOnly SameSite=Strict cookie and redirects to the URL without it, or
``Authorization: Bearer <token>``) or, served with TLS, a client certificate of a person
(nmc.ops.console.access); anything else is a 401 (a refused certificate: 403) with no data. Responses carry
a Content-Security-Policy without inline scripts or styles, ``X-Frame-Options: DENY``,
``nosniff``, ``no-referrer`` and ``no-store``. Templates autoescape every value: facts,
job replies and audit records come from the fleet and may be hostile.
"""

from __future__ import annotations

import hmac
import json
import secrets
import ssl
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import jinja2

if sys.modules.get("aiohttp", False) is None:
    # `nmc` marks aiohttp absent so that nats-py does not load it into every command (nmc.cli.main);
    # the console is the one part of nmc that uses it.
    del sys.modules["aiohttp"]
from aiohttp import web  # noqa: E402 - after lifting nmc.cli.main's mark

from nmc.audit.reader import AuditQuery
from nmc.errors import NmcError, reason_of
from nmc.ops.console.access import AccessRefused, ClientCertificates
from nmc.ops.console.auditview import join_requests
from nmc.ops.console.data import ConsoleData, ConsoleQueryError, parse_since
from nmc.ops.console.live import LiveStreams, events_stream, job_stream
from nmc.ops.console.nodeview import node_activity

__all__ = ["COOKIE", "SECURITY_HEADERS", "make_app", "new_token", "start_site"]

COOKIE = "nmc_console_token"
SECURITY_HEADERS = {
    # script-src 'self': console.js, the one script (live updates), served from the package; nothing inline.
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token may be in the URL of the first page
    "Cache-Control": "no-store",
}
_DATA = web.AppKey("data", ConsoleData)
_TOKEN = web.AppKey("token", str)
_TEMPLATES = web.AppKey("templates", jinja2.Environment)
_LIVE = web.AppKey("live", LiveStreams)
_CERTS = web.AppKey("certs", ClientCertificates)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    """A fresh random access token (256 bits)."""
    return secrets.token_urlsafe(32)


def _same(given: str | None, token: str) -> bool:
    # An empty token is no token (`--no-token`): nothing, not even an empty ?token=, matches it.
    return bool(token) and given is not None and hmac.compare_digest(given.encode(), token.encode())


@web.middleware
async def _security(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers.update(SECURITY_HEADERS)
    if isinstance(response, web.HTTPException) and response.status >= 300:
        raise response
    return response


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An admitted client certificate (HTTPS, nmc.ops.console.access) or the token; anything else gets no data."""
    refusal = _certificate_refusal(request)
    if refusal == "":
        return await handler(request)
    try:
        return await _by_token(request, handler)
    except web.HTTPUnauthorized:
        if refusal is not None:  # a certificate was shown and refused: say why (the token would also have done)
            raise web.HTTPForbidden(text=f"403: {refusal}\n") from None
        raise


def _certificate_refusal(request: web.Request) -> str | None:
    """"" when the client certificate is admitted, why not when it is refused, None without one (or without TLS)."""
    certs = request.app.get(_CERTS)
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if certs is not None and ssl_object is not None else None
    if certs is None or not der:
        return None
    try:
        certs.admit(der)
    except AccessRefused as exc:
        return str(exc)
    return ""


async def _by_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[_TOKEN]
    given = request.query.get("token")
    if given is not None:
        if not _same(given, token):
            raise _unauthorized()
        if request.method == "GET" and not request.path.startswith("/api/"):
            # Take the token out of the address bar (and history) at once: the cookie carries it from now on.
            query = {k: v for k, v in request.query.items() if k != "token"}
            # One leading slash: "//evil.example/" would be a redirect to another site.
            target = "/" + urllib.parse.quote(request.path.lstrip("/"))
            response = web.HTTPFound(target + (f"?{urllib.parse.urlencode(query)}" if query else ""))
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                                secure=request.secure)
            raise response
        return await handler(request)
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer ") and _same(auth[len("Bearer "):].strip(), token):
        return await handler(request)
    if _same(request.cookies.get(COOKIE), token):
        return await handler(request)
    raise _unauthorized()


def _unauthorized() -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(text="401: this console needs its access token: open the URL printed when it "
                                     "started (…/?token=…), or send Authorization: Bearer <token>.\n",
                                headers={"WWW-Authenticate": 'Bearer realm="nmc console"'})


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "never"
    seconds = max(0, int((now or time.time()) - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _width(percent: float) -> str:
    """A bar's CSS class (w0, w5 ... w100): widths come from the stylesheet, the CSP allows no inline style."""
    return f"w{min(100, max(0, 5 * round(percent / 5)))}"


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("nmc.ops.console", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, ago=_ago, width=_width,
                       tojson_text=lambda v: json.dumps(v, sort_keys=True, default=str, ensure_ascii=False))
    return env


def _page(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    html = request.app[_TEMPLATES].get_template(template).render(path=request.path, **context)
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, default=str))


def _error(request: web.Request, status: int, message: str, **extra: Any) -> web.Response:
    if request.path.startswith("/api/"):
        return _json({"error": message, **extra}, status)
    return _page(request, "error.html", status=status, message=message, **extra)


def _int(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        raise ConsoleQueryError(f"{name} must be a number") from None


# -- handlers (each returns the page or the API's JSON from one data call) ----------------------

async def _fleet(request: web.Request) -> dict[str, Any]:
    columns = [c.strip() for c in request.query.get("columns", "").split(",") if c.strip()] or None
    return await request.app[_DATA].fleet(request.query.get("filter", ""), page=_int(request, "page", 1),
                                          columns=columns, quiet_only=request.query.get("quiet") == "1")


async def _audit(request: web.Request) -> dict[str, Any]:
    q = request.query
    query = AuditQuery(caller=q.get("caller") or None, agent=q.get("agent") or None, action=q.get("action") or None,
                       identity=q.get("node") or None, since=parse_since(q.get("since")),
                       until=parse_since(q.get("until")))
    records = await request.app[_DATA].audit(query, decision=q.get("decision") or None,
                                             limit=max(1, min(_int(request, "limit", 1000), 10_000)))
    return {"query": {k: q.get(k, "") for k in ("caller", "agent", "action", "node", "decision", "since", "until")},
            "records": records, "requests": join_requests(records)}


async def _events(request: web.Request) -> dict[str, Any]:
    q = request.query
    data = request.app[_DATA]
    position = await data.events_position()  # before the read: the live page goes on from what it shows
    events = await data.events(kind=q.get("kind") or None, identity=q.get("node") or None,
                               since=parse_since(q.get("since")), filter_text=q.get("filter", ""))
    after = max([position, *(e["seq"] or 0 for e in events)])
    return {"query": {k: q.get(k, "") for k in ("kind", "node", "filter", "since")}, "events": events, "after": after}


def _routes(name: str, fetch: Callable[[web.Request], Awaitable[Any]], template: str, path: str,
            api: str) -> list[web.RouteDef]:
    async def page(request: web.Request) -> web.StreamResponse:
        return await _answer(request, fetch, template)

    async def data(request: web.Request) -> web.StreamResponse:
        return await _answer(request, fetch, None)

    page.__name__, data.__name__ = f"{name}_page", f"{name}_api"
    return [web.get(path, page), web.get(api, data)]


async def _answer(request: web.Request, fetch: Callable[[web.Request], Awaitable[Any]],
                  template: str | None) -> web.StreamResponse:
    try:
        result = await fetch(request)
    except ConsoleQueryError as exc:
        if template is not None and exc.position is not None:  # the Fleet page shows the filter and where it broke
            return _page(request, template, status=400, error=str(exc), position=exc.position, result=None,
                         query=dict(request.query))
        return _failure(request, exc)
    except web.HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - a broker that does not answer must not look like a console bug
        return _failure(request, exc)
    if result is None:
        return _error(request, 404, "not found")
    if template is None:
        if request.query.get("format") == "jsonl" and isinstance(result, dict) and "records" in result:
            body = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in result["records"])
            return web.Response(text=body, content_type="application/x-ndjson", charset="utf-8",
                                headers={"Content-Disposition": 'attachment; filename="nmc-audit.jsonl"'})
        return _json(result)
    return _page(request, template, result=result, error=None, position=None, query=dict(request.query))


async def _node(request: web.Request) -> dict[str, Any] | None:
    data = request.app[_DATA]
    node = await data.node(request.match_info["identity"])
    if node is not None:  # its recent jobs and events, its agents' DDLs (nmc.ops.console.nodeview)
        node.update(await node_activity(data, node["identity"], node["agents"]))
    return node


async def _jobs(request: web.Request) -> dict[str, Any]:
    q = request.query
    return await request.app[_DATA].jobs(caller=q.get("caller") or None, agent=q.get("agent") or None,
                                         page=_int(request, "page", 1))


async def _job(request: web.Request) -> dict[str, Any]:
    return await request.app[_DATA].job(request.match_info["job_id"], request.query.get("caller") or None,
                                        page=_int(request, "page", 1))


def _static(name: str, content_type: str) -> Handler:
    """A file of the package's static/ directory (the stylesheet, the one script): no CDN, no build step."""
    async def serve(request: web.Request) -> web.Response:
        text = resources.files("nmc.ops.console").joinpath("static", name).read_text(encoding="utf-8")
        return web.Response(text=text, content_type=content_type, charset="utf-8")

    return serve


async def _job_stream(request: web.Request) -> web.StreamResponse:
    """The Job page's live updates: the results part again whenever the job stores a record, then `end`."""
    render = request.app[_TEMPLATES].get_template("job_live.html").render
    return await job_stream(request, request.app[_LIVE], request.app[_DATA], render, _failure, SECURITY_HEADERS)


async def _events_stream(request: web.Request) -> web.StreamResponse:
    """The Events page's live updates: each new event (of the page's kind and node) as a table row."""
    render = request.app[_TEMPLATES].get_template("events_row.html").render
    return await events_stream(request, request.app[_LIVE], request.app[_DATA], render, _failure, SECURITY_HEADERS)


def _failure(request: web.Request, exc: Exception) -> web.Response:
    """What the JSON API answers when a read fails: 400 for a bad query, 404 for no job, else 502."""
    if isinstance(exc, ConsoleQueryError):
        return _error(request, 400, str(exc), **({"position": exc.position} if exc.position is not None else {}))
    if isinstance(exc, NmcError):
        return _error(request, 502 if "no job" not in str(exc) else 404, reason_of(exc))
    return _error(request, 502, f"{type(exc).__name__}: {exc}")


def make_app(data: ConsoleData, token: str, certs: ClientCertificates | None = None) -> web.Application:
    """The console's application: pages, /api/, /static/; every route behind `token` or (HTTPS) `certs`."""
    app = web.Application(middlewares=[_security, _auth], client_max_size=64 * 1024)
    app[_DATA], app[_TOKEN], app[_TEMPLATES] = data, token, _templates()
    if certs is not None:
        app[_CERTS] = certs
    app[_LIVE] = LiveStreams()
    app.on_shutdown.append(_end_streams)  # runner.cleanup() must not wait for a browser that keeps a stream open
    app.add_routes([
        *_routes("fleet", _fleet, "fleet.html", "/", "/api/fleet"),
        *_routes("node", _node, "node.html", "/node/{identity}", "/api/node/{identity}"),
        *_routes("jobs", _jobs, "jobs.html", "/jobs", "/api/jobs"),
        web.get("/api/jobs/{job_id}/stream", _job_stream),
        *_routes("job", _job, "job.html", "/jobs/{job_id}", "/api/jobs/{job_id}"),
        *_routes("audit", _audit, "audit.html", "/audit", "/api/audit"),
        web.get("/api/events/stream", _events_stream),
        *_routes("events", _events, "events.html", "/events", "/api/events"),
        web.get("/static/console.css", _static("console.css", "text/css")),
        web.get("/static/console.js", _static("console.js", "text/javascript")),
    ])
    return app


async def _end_streams(app: web.Application) -> None:
    app[_LIVE].stop()


async def start_site(app: web.Application, host: str, port: int,
                     ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: any free port; HTTPS with `ssl_context`) on the running loop: runner, port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner, int(runner.addresses[0][1])
