"""The console's aiohttp application: pages, the JSON API under /api/, the access token, security headers.

Access: every request, the stylesheet included, needs the token (``?token=`` once, which
sets an HttpOnly SameSite=Strict cookie and redirects to the URL without it, or
``Authorization: Bearer <token>``); anything else is a 401 with no data. Responses carry
a Content-Security-Policy without inline scripts or styles, ``X-Frame-Options: DENY``,
``nosniff``, ``no-referrer`` and ``no-store``. Templates autoescape every value: facts,
job replies and audit records come from the fleet and may be hostile.
"""

from __future__ import annotations

import hmac
import json
import secrets
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
from nmc.ops.console.data import ConsoleData, ConsoleQueryError, parse_since

__all__ = ["COOKIE", "SECURITY_HEADERS", "make_app", "new_token", "start_site"]

COOKIE = "nmc_console_token"
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token may be in the URL of the first page
    "Cache-Control": "no-store",
}
_DATA = web.AppKey("data", ConsoleData)
_TOKEN = web.AppKey("token", str)
_TEMPLATES = web.AppKey("templates", jinja2.Environment)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    """A fresh random access token (256 bits)."""
    return secrets.token_urlsafe(32)


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


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
                                          columns=columns)


async def _audit(request: web.Request) -> dict[str, Any]:
    q = request.query
    query = AuditQuery(caller=q.get("caller") or None, agent=q.get("agent") or None, action=q.get("action") or None,
                       identity=q.get("node") or None, since=parse_since(q.get("since")),
                       until=parse_since(q.get("until")))
    records = await request.app[_DATA].audit(query, decision=q.get("decision") or None,
                                             limit=max(1, min(_int(request, "limit", 1000), 10_000)))
    return {"query": {k: q.get(k, "") for k in ("caller", "agent", "action", "node", "decision", "since", "until")},
            "records": records}


async def _events(request: web.Request) -> dict[str, Any]:
    q = request.query
    events = await request.app[_DATA].events(kind=q.get("kind") or None, identity=q.get("node") or None,
                                             since=parse_since(q.get("since")))
    return {"query": {k: q.get(k, "") for k in ("kind", "node", "since")}, "events": events}


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
        extra = {"position": exc.position} if exc.position is not None else {}
        if template is not None and exc.position is not None:  # the Fleet page shows the filter and where it broke
            return _page(request, template, status=400, error=str(exc), **extra, result=None,
                         query=dict(request.query))
        return _error(request, 400, str(exc), **extra)
    except web.HTTPException:
        raise
    except NmcError as exc:
        return _error(request, 502 if "no job" not in str(exc) else 404, reason_of(exc))
    except Exception as exc:  # noqa: BLE001 - a broker that does not answer must not look like a console bug
        return _error(request, 502, f"{type(exc).__name__}: {exc}")
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
    return await request.app[_DATA].node(request.match_info["identity"])


async def _jobs(request: web.Request) -> dict[str, Any]:
    q = request.query
    return {"jobs": await request.app[_DATA].jobs(caller=q.get("caller") or None, agent=q.get("agent") or None)}


async def _job(request: web.Request) -> dict[str, Any]:
    return await request.app[_DATA].job(request.match_info["job_id"], request.query.get("caller") or None)


async def _stylesheet(request: web.Request) -> web.Response:
    css = resources.files("nmc.ops.console").joinpath("static", "console.css").read_text(encoding="utf-8")
    return web.Response(text=css, content_type="text/css", charset="utf-8")


def make_app(data: ConsoleData, token: str) -> web.Application:
    """The console's application: pages, /api/, /static/console.css; every route behind `token`."""
    app = web.Application(middlewares=[_security, _auth], client_max_size=64 * 1024)
    app[_DATA], app[_TOKEN], app[_TEMPLATES] = data, token, _templates()
    app.add_routes([
        *_routes("fleet", _fleet, "fleet.html", "/", "/api/fleet"),
        *_routes("node", _node, "node.html", "/node/{identity}", "/api/node/{identity}"),
        *_routes("jobs", _jobs, "jobs.html", "/jobs", "/api/jobs"),
        *_routes("job", _job, "job.html", "/jobs/{job_id}", "/api/jobs/{job_id}"),
        *_routes("audit", _audit, "audit.html", "/audit", "/api/audit"),
        *_routes("events", _events, "events.html", "/events", "/api/events"),
        web.get("/static/console.css", _stylesheet),
    ])
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: any free port) on the running loop; returns the runner and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])
