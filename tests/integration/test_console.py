"""The read-only web console against a real secure fleet: token, escaping, headers, every page's data, its role.

A real nats-server with nmc's generated permissions (tests/adversarial/kit.py), the
console started in-process on 127.0.0.1 with its own certificate (role `console`,
issued by write_fleet), and a real HTTP client.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nmc.client.run import JobOptions, run_action
from nmc.ops.console.service import ConsoleService
from tests.adversarial.kit import HostileFleet, until
from tests.integration.consolekit import hostile_fact_fleet, running_console

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
NODES = 4
HOSTILE = "<script>alert(1)</script><b>x</b>"
COLUMNS = ("role", "country", "motd")


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[HostileFleet]:
    async with hostile_fact_fleet(tmp_path / "fleet", NODES, HOSTILE) as fleet:
        yield fleet


@pytest.fixture
async def console(fleet: HostileFleet) -> AsyncIterator[ConsoleService]:
    async with running_console(fleet, COLUMNS) as service:
        yield service


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: aiohttp's jar keeps no cookie of an IP address otherwise (browsers do keep 127.0.0.1's).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


def base(console: ConsoleService) -> str:
    return f"http://127.0.0.1:{console.bound_port}"


def bearer(console: ConsoleService) -> dict[str, str]:
    return {"Authorization": f"Bearer {console.token}"}


async def api(http: aiohttp.ClientSession, console: ConsoleService, path: str, **params: str) -> Any:
    async with http.get(base(console) + path, params=params, headers=bearer(console)) as r:
        assert r.status == 200, (path, r.status, await r.text())
        return await r.json()


async def registered(http: aiohttp.ClientSession, console: ConsoleService, count: int) -> None:
    async def check() -> bool:
        return (await api(http, console, "/api/fleet"))["matched"] >= count

    await until(check, 20, f"{count} nodes in the registry")


async def test_without_the_token_nothing_is_shown(fleet: HostileFleet, console: ConsoleService,
                                                  http: aiohttp.ClientSession) -> None:
    await registered(http, console, NODES)
    for path in ("/", "/node/node1.example.net", "/jobs", "/audit", "/events", "/api/fleet",
                 "/api/node/node1.example.net", "/api/jobs", "/api/audit", "/api/events", "/static/console.css",
                 "/static/console.js", "/api/events/stream", f"/api/jobs/{'0' * 32}/stream"):
        for headers, params in (({}, {}), ({"Authorization": "Bearer wrong"}, {}), ({}, {"token": "wrong"}),
                                ({"Cookie": "nmc_console_token=wrong"}, {})):
            async with http.get(base(console) + path, headers=headers, params=params, allow_redirects=False) as r:
                body = await r.text()
                assert r.status == 401, (path, headers, params, r.status)
                assert "example.net" not in body and "motd" not in body, body
                assert r.headers["X-Frame-Options"] == "DENY"


async def test_the_token_in_the_url_sets_a_cookie_and_pages_carry_security_headers(
        fleet: HostileFleet, console: ConsoleService, http: aiohttp.ClientSession) -> None:
    assert console.url == f"{base(console)}/?token={console.token}"
    async with http.get(console.url, allow_redirects=False) as r:
        assert r.status == 302 and "token" not in r.headers["Location"]
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # The redirect stays on this site whatever the path looks like, and keeps the other parameters.
    async with http.get(base(console) + "//evil.example/", params={"token": console.token, "filter": "role=web"},
                        allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/evil.example/?filter=role%3Dweb"
    async with http.get(base(console) + "/") as r:  # the session's cookie jar now holds it
        assert r.status == 200
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "default-src 'none'" in csp and "script-src 'self';" in csp  # console.js, nothing inline
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
        assert "<script" not in await r.text()
    async with http.get(base(console) + "/events") as r:  # a live page loads the package's one script, no inline one
        scripts = re.findall(r"<script[^>]*>", await r.text())
    assert scripts == ['<script src="/static/console.js" defer>']
    async with http.get(base(console) + "/static/console.js") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
        assert "EventSource" in await r.text() and r.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_fleet_page_lists_filters_counts_and_escapes(fleet: HostileFleet, console: ConsoleService,
                                                               http: aiohttp.ClientSession) -> None:
    await registered(http, console, NODES)
    async with http.get(base(console) + "/", headers=bearer(console)) as r:
        page = await r.text()
    assert all(identity in page for identity in fleet.identities)
    assert HOSTILE not in page and "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'class="bar w' in page  # the counts, as classes the stylesheet sizes

    data = await api(http, console, "/api/fleet", filter="role=web")
    web = sorted(n["identity"] for n in data["nodes"])
    assert web and len(web) < NODES and data["matched"] == len(web) and data["total"] == NODES
    assert all(n["facts"]["role"] == "web" for n in data["nodes"])
    assert {"value": "web", "count": len(web), "percent": 100} in data["counts"]["role"]
    async with http.get(base(console) + "/", params={"filter": "role=web"}, headers=bearer(console)) as r:
        page = await r.text()
    assert all((identity in page) == (identity in web) for identity in fleet.identities)

    async with http.get(base(console) + "/", params={"filter": "role=web and ("}, headers=bearer(console)) as r:
        assert r.status == 400
        page = await r.text()
    assert "bad filter: column 15: expected a term after" in page and "role=web and (\n" + " " * 14 + "^" in page
    async with http.get(base(console) + "/", params={"filter": '"><script>alert(2)</script>'},
                        headers=bearer(console)) as r:  # what the user typed is shown back, escaped, as it was typed
        page = await r.text()
    assert "<script>" not in page and "&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in page
    async with http.get(base(console) + "/api/fleet", params={"filter": "role=web and ("},
                        headers=bearer(console)) as r:
        assert r.status == 400
        assert (await r.json())["position"] == 14

    node = await api(http, console, f"/api/node/{fleet.identities[0]}")
    assert node["facts"]["motd"] == HOSTILE and "rpcutil" in node["agents"] and node["classes"]
    async with http.get(base(console) + f"/node/{fleet.identities[0]}", headers=bearer(console)) as r:
        page = await r.text()
    assert HOSTILE not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "motd" in page
    async with http.get(base(console) + "/api/node/nosuch.example.net", headers=bearer(console)) as r:
        assert r.status == 404


async def test_a_job_and_its_replies(fleet: HostileFleet, console: ConsoleService,
                                     http: aiohttp.ClientSession) -> None:
    async with fleet.client("admin") as fc:
        result = await run_action(fc, "rpcutil", "get_fact", {"fact": "role"}, job=JobOptions())
    assert result is not None and result.job_id
    jobs = (await api(http, console, "/api/jobs"))["jobs"]
    assert [j["caller"] for j in jobs if j["id"] == result.job_id] == ["admin"]
    job = await api(http, console, f"/api/jobs/{result.job_id}")
    assert sorted(r["identity"] for r in job["replies"]) == sorted(fleet.identities)
    assert all(r["ok"] and r["data"]["fact"] == "role" for r in job["replies"]) and not job["missing"]
    async with http.get(base(console) + f"/jobs/{result.job_id}", headers=bearer(console)) as r:
        page = await r.text()
    assert r.status == 200 and all(identity in page for identity in fleet.identities)
    async with http.get(base(console) + "/jobs", headers=bearer(console)) as r:
        assert result.job_id in await r.text()


async def test_the_jobs_list_pages_and_reads_a_settled_job_once(
        fleet: HostileFleet, console: ConsoleService, monkeypatch: pytest.MonkeyPatch) -> None:
    import nmc.client.jobs as client_jobs
    import nmc.ops.console.data as console_data

    ids = []
    async with fleet.client("admin") as fc:
        for _ in range(3):
            ran = await run_action(fc, "rpcutil", "ping", job=JobOptions())
            assert ran is not None and ran.job_id
            ids.append(ran.job_id)
    data = console.data
    assert data is not None
    first = await data.jobs(page=1, page_size=2)
    second = await data.jobs(page=2, page_size=2)
    assert (first["total"], first["pages"], len(first["jobs"]), len(second["jobs"])) == (3, 2, 2, 1)
    assert [j["id"] for j in first["jobs"] + second["jobs"]] == list(reversed(ids))  # newest first
    monkeypatch.setattr(console_data, "SETTLE_SECONDS", -3600.0)  # as if their time were long over
    await data.jobs()
    reads: list[str] = []
    real_read = client_jobs._read

    async def counting(*args: Any, **kw: Any) -> Any:
        reads.append(args[4])
        return await real_read(*args, **kw)

    monkeypatch.setattr(client_jobs, "_read", counting)
    again = await data.jobs()
    assert sorted(j["id"] for j in again["jobs"]) == sorted(ids) and reads == []


async def test_a_big_jobs_replies_come_a_page_at_a_time_and_a_settled_job_is_read_once(
        fleet: HostileFleet, console: ConsoleService, monkeypatch: pytest.MonkeyPatch) -> None:
    import nmc.ops.console.data as console_data

    async with fleet.client("admin") as fc:
        result = await run_action(fc, "rpcutil", "ping", job=JobOptions())
    assert result is not None and result.job_id and len(result.results) == NODES
    data = console.data
    assert data is not None
    first = await data.job(result.job_id, "admin", page=1, page_size=3)
    last = await data.job(result.job_id, "admin", page=2, page_size=3)
    assert (first["reply_count"], first["pages"], len(first["replies"]), len(last["replies"])) == (NODES, 2, 3, 1)
    assert [r["identity"] for r in first["replies"] + last["replies"]] == sorted(fleet.identities)
    assert sum(row["count"] for row in last["charts"]["status"]) == NODES  # the charts count every reply
    assert (await data.job(result.job_id, "admin", page=99, page_size=3))["page"] == 2
    # A job that can change no more (end record, time over) is kept: its next page reads nothing.
    assert (("admin", result.job_id)) not in data._settled
    monkeypatch.setattr(console_data, "SETTLE_SECONDS", -3600.0)
    await data.job(result.job_id, "admin")
    assert ("admin", result.job_id) in data._settled

    async def unreadable(*args: Any, **kw: Any) -> Any:
        raise AssertionError("read again")

    monkeypatch.setattr(console_data, "read_job", unreadable)
    again = await data.job(result.job_id, "admin", page=2, page_size=3)
    assert [r["identity"] for r in again["replies"]] == [r["identity"] for r in last["replies"]]


async def test_an_audit_search_finds_the_denied_caller_and_exports_json_lines(
        fleet: HostileFleet, console: ConsoleService, http: aiohttp.ClientSession) -> None:
    async with fleet.client("mallory") as fc:
        await run_action(fc, "rpcutil", "ping")

    async def denied() -> list[dict[str, Any]]:
        return (await api(http, console, "/api/audit", caller="cert=mallory", decision="denied"))["records"]

    await until(lambda: _nonempty(denied()), 20, "mallory's denied requests in the audit stream")
    records = await denied()
    assert {r["caller"] for r in records} == {"cert=mallory"} and not any(r["allowed"] for r in records)
    assert {r["identity"] for r in records} <= set(fleet.identities)
    assert (await api(http, console, "/api/audit", caller="cert=mallory", decision="allowed"))["records"] == []
    # One row per request on a node: the decision and result records joined.
    requests = (await api(http, console, "/api/audit", caller="cert=mallory", decision="denied"))["requests"]
    assert requests and all(r["decision"] and not r["allowed"] and r["rule"] for r in requests)
    assert len({(r["request_id"], r["identity"]) for r in requests}) == len(requests)
    async with fleet.client("admin") as fc:
        allowed = await run_action(fc, "rpcutil", "ping")
    assert allowed is not None and allowed.results

    async def joined() -> list[dict[str, Any]]:
        rows = (await api(http, console, "/api/audit", caller="cert=admin", action="ping"))["requests"]
        return [r for r in rows if r["decision"] and r["result"]]

    await until(lambda: _nonempty(joined()), 20, "admin's ping with both records in the audit stream")
    row = (await joined())[0]
    assert row["allowed"] and row["status"] == 0 and row["duration_ms"] is not None

    async with http.get(base(console) + "/api/audit", params={"caller": "cert=mallory", "format": "jsonl"},
                        headers=bearer(console)) as r:
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in (await r.text()).splitlines()]
    assert lines and {line["caller"] for line in lines} == {"cert=mallory"}
    async with http.get(base(console) + "/audit", params={"caller": "cert=mallory"}, headers=bearer(console)) as r:
        page = await r.text()
    assert "cert=mallory" in page and "denied" in page and "format=jsonl" in page

    events = (await api(http, console, "/api/events", kind="startup"))["events"]
    assert {e["identity"] for e in events} >= set(fleet.identities)
    # A filter on the publishers' registry records, as `nmc events watch -F`: only node1's events.
    await registered(http, console, NODES)
    first = fleet.identities[0]
    narrowed = (await api(http, console, "/api/events", kind="startup", filter=f"identity({first})"))["events"]
    assert narrowed and {e["identity"] for e in narrowed} == {first}
    async with http.get(base(console) + "/api/events", params={"filter": "role=(web"},
                        headers=bearer(console)) as r:
        assert r.status == 400 and (await r.json())["position"] is not None
    async with http.get(base(console) + "/events", params={"filter": "role=(web"}, headers=bearer(console)) as r:
        assert r.status == 400 and "bad filter" in await r.text() and 'class="caret"' in await r.text()
    async with http.get(base(console) + "/events", params={"kind": "startup"}, headers=bearer(console)) as r:
        page = await r.text()
    assert r.status == 200 and all(identity in page for identity in fleet.identities)
    async with http.get(base(console) + "/api/audit", params={"since": "yesterday"}, headers=bearer(console)) as r:
        assert r.status == 400 and "bad time" in (await r.json())["error"]


async def _nonempty(records: Any) -> bool:
    return bool(await records)


async def test_the_console_certificate_cannot_send_a_request(fleet: HostileFleet) -> None:
    errors: list[str] = []
    nc = await fleet.connect_as("nmc-console", errors=errors)
    await nc.publish("nmc.nmc.all.rpcutil.ping", b"{}")
    await nc.publish("$SRV.PING", b"")
    await nc.flush()
    deadline = time.monotonic() + 10
    while sum("permissions violation" in e.lower() for e in errors) < 2:
        assert time.monotonic() < deadline, errors
        await asyncio.sleep(0.02)
    assert any("nmc.nmc.all.rpcutil.ping" in e for e in errors)
    # The nodes ran nothing for it: a later request of admin's is audited, nothing of the console's is.
    async with fleet.client("admin") as fc:
        await run_action(fc, "rpcutil", "ping")
    await until(lambda: any(r.get("caller") == "cert=admin" for r in fleet.audit_records()), 20,
                "admin's ping in the audit trail")
    assert not any("nmc-console" in str(r.get("caller")) for r in fleet.audit_records())


async def test_the_command_prints_its_url_serves_and_stops_on_sigterm(fleet: HostileFleet,
                                                                      http: aiohttp.ClientSession) -> None:
    fleet.client_config("nmc-console")  # writes client-nmc-console.cfg
    env = {"HOME": str(fleet.root), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nmc", "serve", "console", "--config", str(fleet.root / "client-nmc-console.cfg"),
        "--port", "0", "--log-format", "json", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        match = re.fullmatch(r"nmc console: open (http://127\.0\.0\.1:\d+/\?token=[\w-]+)\n", line)
        assert match, line
        url = match.group(1)
        async with http.get(url.split("?")[0] + "api/fleet") as r:
            assert r.status == 401
        async with http.get(url) as r:  # follows the redirect, with the cookie
            assert r.status == 200 and "Fleet" in await r.text()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert '"event": "console_listening"' in err.decode()


# -- live updates (server-sent events) -------------------------------------------------------------

SLEEP = 2  # seconds the live job's command sleeps: long enough to open its stream while it runs
INJECTION = "<script>window.__pwned=1</script>\\r\\nevent: end\\r\\ndata: forged\\n"  # printf's escapes


async def sse_events(response: aiohttp.ClientResponse, within: float,
                     stop: str | None = "end") -> list[tuple[str, str]]:
    """(event, data) pairs as the browser's EventSource parses them, until a `stop` event or `within` seconds."""
    found: list[tuple[str, str]] = []
    event, data = "message", []
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {stop!r} event within {within} s: {found}"
        raw = await asyncio.wait_for(response.content.readline(), left)
        assert raw, f"the stream closed before {stop!r}: {found}"
        line = raw.decode().rstrip("\n")
        if line == "":
            if data:
                found.append((event, "\n".join(data)))
                if event == stop:
                    return found
            event, data = "message", []
        elif line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            data.append(line[len("data: "):])


async def background_shell_job(fleet: HostileFleet, command: str) -> str:
    """A job of `command` on every node, started with --background's options: its id as soon as it is recorded."""
    async with fleet.client("admin") as fc:
        result = await run_action(fc, "shell", "run", {"command": command}, job=JobOptions(background=True))
    assert result is not None and result.job_id
    return result.job_id


async def test_a_running_job_streams_its_replies_as_they_arrive_then_ends(
        fleet: HostileFleet, console: ConsoleService, http: aiohttp.ClientSession) -> None:
    await registered(http, console, NODES)
    job_id = await background_shell_job(fleet, f"sleep {SLEEP}; printf '{INJECTION}'")
    async with http.get(base(console) + f"/jobs/{job_id}", headers=bearer(console)) as r:
        page = await r.text()
    assert f'data-stream="/api/jobs/{job_id}/stream?caller=admin&amp;page=1"' in page and "still running" in page
    async with http.get(base(console) + f"/api/jobs/{job_id}/stream", headers=bearer(console)) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert "unsafe-inline" not in r.headers["Content-Security-Policy"] and r.headers["X-Frame-Options"] == "DENY"
        events = await sse_events(r, SLEEP + 20)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and kinds.count("end") == 1 and set(kinds[:-1]) == {"results"}, kinds
    assert events[-1][1] == "complete"  # the forged "event: end" in the replies' output ended nothing
    rows = [data.count('<tr class="ok">') for kind, data in events if kind == "results"]
    assert rows[0] < NODES and rows[-1] == NODES and rows == sorted(rows), rows  # filled in as they came
    last = events[-2][1]
    assert all(identity in last for identity in fleet.identities) and "complete" in last
    assert "<script>" not in last and "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in last
    assert "Exit Code" in last and "Summary of Exit Code" in last  # labelled by the DDL, with its aggregate
    assert 'class="bar ok w100"' in last  # the status chart: every target ok

    job = await api(http, console, f"/api/jobs/{job_id}")
    assert job["complete"] and job["ddl"] and [a["text"] for a in job["aggregates"]] == [
        f"Summary of Exit Code:\n\n   0 = {NODES}"]
    assert {"label": "Exit Code", "value": "0"} in job["replies"][0]["fields"]
    assert sum(b["count"] for b in job["charts"]["durations"]) == NODES
    assert [(s["status"], s["count"]) for s in job["charts"]["status"]] == [("ok", NODES), ("failed", 0),
                                                                           ("no reply", 0)]
    # A complete job's stream says so at once: its page has no stream to follow.
    async with http.get(base(console) + f"/api/jobs/{job_id}/stream", headers=bearer(console)) as r:
        assert [kind for kind, _ in await sse_events(r, 10)] == ["results", "end"]
    async with http.get(base(console) + f"/jobs/{job_id}", headers=bearer(console)) as r:
        assert "data-stream" not in await r.text()
    async with http.get(base(console) + f"/api/jobs/{'0' * 32}/stream", headers=bearer(console)) as r:
        assert r.status == 404 and "no job" in (await r.json())["error"]


async def test_a_failed_reply_shows_its_message_and_only_what_it_says(
        fleet: HostileFleet, console: ConsoleService, http: aiohttp.ClientSession) -> None:
    async with fleet.client("admin") as fc:
        result = await run_action(fc, "shell", "run", {"command": "exit 3"}, job=JobOptions())
    assert result is not None and result.job_id
    job = await api(http, console, f"/api/jobs/{result.job_id}")
    reply = job["replies"][0]
    assert not reply["ok"] and reply["message"]
    labels = [f["label"] for f in reply["fields"]]
    assert "Exit Code" in labels and "Output" not in labels  # the empty stdout says nothing
    async with http.get(base(console) + f"/jobs/{result.job_id}", headers=bearer(console)) as r:
        page = await r.text()
    assert 'class="message"' in page and 'class="bar failed w100"' in page


async def test_the_events_stream_sends_new_events_live_and_the_console_stops_it(
        fleet: HostileFleet, console: ConsoleService, http: aiohttp.ClientSession) -> None:
    await registered(http, console, NODES)
    page = await api(http, console, "/api/events", kind="startup")
    identity = fleet.identities[-1]
    async with http.get(base(console) + "/api/events/stream", params={"kind": "startup", "after": str(page["after"])},
                        headers=bearer(console)) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        await fleet.restart_node(identity)  # a new startup event
        events = await sse_events(r, 20, stop="event")
        assert events[-1][0] == "event" and f"<td>startup</td><td>{identity}</td>" in events[-1][1]
        # Stopping the console ends the stream (its last word is `end`) and does not wait for the browser.
        stopping = asyncio.ensure_future(console.stop())
        assert (await sse_events(r, 10))[-1] == ("end", "stopped")
        await asyncio.wait_for(stopping, 10)


async def test_streams_need_the_token_and_are_limited_per_client(
        fleet: HostileFleet, console: ConsoleService, http: aiohttp.ClientSession) -> None:
    from nmc.ops.console.live import PER_CLIENT

    opened = []
    try:
        for _ in range(PER_CLIENT):
            r = await http.get(base(console) + "/api/events/stream", headers=bearer(console))
            opened.append(r)
            assert r.status == 200
        async with http.get(base(console) + "/api/events/stream", headers=bearer(console)) as r:
            assert r.status == 429
    finally:
        for r in opened:
            r.close()  # the console notices the closed connections and frees their places

    async def free() -> bool:
        async with http.get(base(console) + "/api/events/stream", headers=bearer(console)) as r:
            return r.status == 200

    await until(free, 10, "a stream place after the clients closed theirs")
    async with http.get(base(console) + "/api/events/stream", params={"after": "x"}, headers=bearer(console)) as r:
        assert r.status == 400
