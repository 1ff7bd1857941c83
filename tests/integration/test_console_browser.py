"""The read-only web console in a real browser: Debian's headless chromium driven by Selenium.

The same secure fleet as tests/integration/test_console.py (tests/adversarial/kit.py, the
console in-process on 127.0.0.1 with its own certificate), seen the way a user sees it:
the token link sets the cookie, the fleet page lists every node, the filter box narrows it
and shows a positioned error, a node's fact holding a script renders as text (and runs
nothing), a job started with the client library appears with every node's reply, and the
audit page's search finds a denied request.

The browser and its driver are the system's (/usr/bin/chromium, /usr/bin/chromedriver from
the chromium and chromium-driver packages): Selenium Manager never downloads anything
(SE_OFFLINE). Missing, the test is skipped with one line (fails in CI, tests/tools.py).
A screenshot of every page is saved under $NMC_TEST_ARTIFACTS, or else the test's tmp_path.

Selenium blocks, and the console runs on the test's event loop, so every browser step runs
in a thread (asyncio.to_thread) while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from nmc.client.run import JobOptions, run_action
from nmc.ops.console.service import ConsoleService
from tests.adversarial.kit import HostileFleet, until
from tests.integration.consolekit import hostile_fact_fleet, running_console
from tests.tools import require_tool

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
NODES = 4
HOSTILE = "<script>window.__pwned=1</script><b>bold</b>"
COLUMNS = ("role", "country", "motd")
WAIT = 20
SLEEP = 6  # seconds the live job's command sleeps: the Job page opens before any reply is in
T = TypeVar("T")


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where the screenshots go: $NMC_TEST_ARTIFACTS (CI keeps it), else this test's tmp_path."""
    where = os.environ.get("NMC_TEST_ARTIFACTS")
    directory = Path(where) / "console-browser" if where else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots: {directory}")
    return directory


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    # Before the fleet fixtures: a missing browser skips (or fails in CI) without starting a fleet.
    chromium = require_tool("chromium")
    chromedriver = require_tool("chromedriver")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: use what is given, download nothing
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1024",
                     "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # chromium refuses to run its sandbox as root
    browser = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        browser.set_page_load_timeout(WAIT)
        yield browser
    finally:
        browser.quit()


@pytest.fixture
async def fleet(tmp_path: Path, driver: WebDriver) -> AsyncIterator[HostileFleet]:
    async with hostile_fact_fleet(tmp_path / "fleet", NODES, HOSTILE) as fleet:
        yield fleet


@pytest.fixture
async def console(fleet: HostileFleet) -> AsyncIterator[ConsoleService]:
    async with running_console(fleet, COLUMNS) as service:
        yield service


async def api(console: ConsoleService, path: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{console.bound_port}{path}", params=params,
                            headers={"Authorization": f"Bearer {console.token}"}) as r:
            assert r.status == 200, (path, r.status, await r.text())
            return await r.json()


async def in_browser(step: Callable[..., T], *args: Any) -> T:
    """Runs a blocking Selenium step in a thread, so the event loop (and the console on it) keeps serving."""
    return await asyncio.to_thread(step, *args)


def wait(browser: WebDriver) -> WebDriverWait:
    return WebDriverWait(browser, WAIT)


def shot(browser: WebDriver, artifacts: Path, name: str) -> None:
    path = artifacts / f"{name}.png"
    assert browser.save_screenshot(str(path)), path
    print(f"screenshot: {path}")


def reply_rows(browser: WebDriver) -> list[Any]:
    """The Job page's reply rows (not the rows of each reply's labelled outputs)."""
    return browser.find_elements(By.CSS_SELECTOR, "table.replies > tbody > tr:not(.empty)")


def node_rows(browser: WebDriver) -> list[str]:
    return [a.text for a in browser.find_elements(By.CSS_SELECTOR, "table.nodes tbody td:first-child a")]


def submit_filter(browser: WebDriver, text: str) -> None:
    box = browser.find_element(By.ID, "filter")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.CSS_SELECTOR, "form.filter button[type=submit]").click()
    wait(browser).until(ec.staleness_of(box))  # the form's GET loaded a new page


async def test_the_console_in_a_headless_browser(fleet: HostileFleet, console: ConsoleService, driver: WebDriver,
                                                 artifacts: Path) -> None:
    async def registered() -> bool:
        return (await api(console, "/api/fleet"))["matched"] >= NODES

    await until(registered, 20, f"{NODES} nodes in the registry")
    web = sorted(n["identity"] for n in (await api(console, "/api/fleet", filter="role=web"))["nodes"])
    assert web and len(web) < NODES

    def fleet_pages() -> None:
        driver.get(console.url)  # ?token=...: the console sets its cookie and redirects to /
        wait(driver).until(ec.title_contains("Fleet"))
        assert "token" not in driver.current_url and driver.get_cookie("nmc_console_token") is not None
        assert sorted(node_rows(driver)) == sorted(fleet.identities)
        shot(driver, artifacts, "01-fleet")

        submit_filter(driver, "role=web")
        assert sorted(node_rows(driver)) == web
        assert driver.find_element(By.ID, "filter").get_attribute("value") == "role=web"
        shot(driver, artifacts, "02-fleet-filtered")

        submit_filter(driver, "role=web and (")
        error = wait(driver).until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".filter-error")))
        assert "bad filter: column 15: expected a term after" in error.text
        caret = driver.find_element(By.CSS_SELECTOR, ".filter-error pre.caret").text.split("\n")
        assert caret == ["role=web and (", " " * 14 + "^"], caret
        assert node_rows(driver) == []
        shot(driver, artifacts, "03-fleet-bad-filter")

        submit_filter(driver, "")
        driver.find_element(By.LINK_TEXT, fleet.identities[0]).click()
        wait(driver).until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), fleet.identities[0]))
        motd = driver.find_element(By.XPATH, "//ul[@class='facttree']/li[span[@class='factname']='motd']"
                                             "/span[@class='factvalue']")
        assert motd.text == HOSTILE  # shown as the text it is: nothing parsed as markup
        assert motd.find_elements(By.TAG_NAME, "b") == [] and motd.find_elements(By.TAG_NAME, "script") == []
        assert driver.execute_script("return window.__pwned === undefined") is True
        shot(driver, artifacts, "04-node-hostile-fact")

    await in_browser(fleet_pages)

    async with fleet.client("admin") as fc:
        result = await run_action(fc, "rpcutil", "get_fact", {"fact": "role"}, job=JobOptions())
    assert result is not None and result.job_id

    def job_pages() -> None:
        driver.find_element(By.LINK_TEXT, "Jobs").click()
        link = wait(driver).until(ec.element_to_be_clickable((By.LINK_TEXT, result.job_id)))
        row = link.find_element(By.XPATH, "./ancestor::tr")
        assert "admin" in row.text and "rpcutil.get_fact" in row.text
        shot(driver, artifacts, "05-jobs")
        link.click()
        wait(driver).until(ec.title_contains(f"Job {result.job_id}"))
        replies = reply_rows(driver)
        assert sorted(r.find_element(By.TAG_NAME, "td").text for r in replies) == sorted(fleet.identities)
        assert all(r.get_attribute("class") == "ok" for r in replies)
        assert all([th.text for th in r.find_elements(By.CSS_SELECTOR, "table.fields th")] == ["fact", "value"]
                   for r in replies)
        assert driver.find_elements(By.XPATH, "//h2[text()='No reply']") == []
        shot(driver, artifacts, "06-job")

    await in_browser(job_pages)

    async with fleet.client("mallory") as fc:
        await run_action(fc, "rpcutil", "ping")  # the dev policy denies mallory

    async def audited() -> bool:
        return bool((await api(console, "/api/audit", caller="cert=mallory", decision="denied"))["records"])

    await until(audited, 20, "mallory's denied requests in the audit stream")

    def audit_page() -> None:
        driver.find_element(By.LINK_TEXT, "Audit").click()
        caller = wait(driver).until(ec.visibility_of_element_located((By.ID, "caller")))
        caller.send_keys("cert=mallory")
        Select(driver.find_element(By.ID, "decision")).select_by_value("denied")
        driver.find_element(By.CSS_SELECTOR, "form.filter button[type=submit]").click()
        wait(driver).until(ec.staleness_of(caller))
        rows = driver.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
        assert rows and all("cert=mallory" in r.text and "denied" in r.text and "rpcutil.ping" in r.text
                            for r in rows), [r.text for r in rows]
        assert driver.find_element(By.PARTIAL_LINK_TEXT, "export JSON lines").get_attribute("href").endswith(
            "format=jsonl")
        shot(driver, artifacts, "07-audit-denied")

    await in_browser(audit_page)

    # Live: a job started with the real command fills its page in as the replies arrive, with no reload.
    job_id = await rpc_in_background(fleet, f"sleep {SLEEP}; printf '{HOSTILE}'")

    def job_live() -> None:
        driver.find_element(By.LINK_TEXT, "Jobs").click()
        wait(driver).until(ec.element_to_be_clickable((By.LINK_TEXT, job_id))).click()
        wait(driver).until(ec.title_contains(f"Job {job_id}"))
        assert driver.find_element(By.CSS_SELECTOR, ".state").text == "still running"
        assert len(reply_rows(driver)) < NODES
        wait(driver).until(lambda d: d.find_element(By.ID, "job-live").get_attribute("data-live") == "open")
        driver.execute_script("window.__sameDocument = 'yes'")  # gone if anything reloads the page
        shot(driver, artifacts, "08-job-running")
        wait(driver).until(lambda d: len(reply_rows(d)) == NODES)
        wait(driver).until(lambda d: d.find_element(By.ID, "job-live").get_attribute("data-live") == "complete")
        assert driver.execute_script("return window.__sameDocument") == "yes"
        assert driver.find_element(By.CSS_SELECTOR, ".state").text == "complete"
        outputs = driver.find_elements(By.XPATH, "//table[@class='fields']//tr[th='Output']/td")
        assert [o.text for o in outputs] == [HOSTILE] * NODES  # the reply's <script> is text here too
        assert driver.find_elements(By.CSS_SELECTOR, "#job-live script, #job-live b") == []
        assert driver.execute_script("return window.__pwned === undefined") is True
        assert "Summary of Exit Code" in driver.find_element(By.CSS_SELECTOR, "pre.aggregates").text
        assert driver.find_elements(By.CSS_SELECTOR, ".chart-status .bar.ok.w100")
        shot(driver, artifacts, "09-job-live-complete")

    await in_browser(job_live)

    # Live: the Events page shows a node's new startup event as it is stored.
    restarted = fleet.identities[-1]

    def events_open() -> None:
        driver.find_element(By.LINK_TEXT, "Events").click()
        kind = wait(driver).until(ec.visibility_of_element_located((By.ID, "kind")))
        kind.send_keys("startup")
        driver.find_element(By.CSS_SELECTOR, "form.filter button[type=submit]").click()
        wait(driver).until(ec.staleness_of(kind))
        wait(driver).until(lambda d: d.find_element(By.ID, "events-live").get_attribute("data-live") == "open")
        assert driver.find_elements(By.CSS_SELECTOR, "#events-live tr.live-new") == []
        driver.execute_script("window.__sameDocument = 'events'")

    await in_browser(events_open)
    await fleet.restart_node(restarted)

    def event_live() -> None:
        row = wait(driver).until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#events-live tr.live-new")))
        assert [td.text for td in row.find_elements(By.TAG_NAME, "td")][1:3] == ["startup", restarted]
        assert driver.execute_script("return window.__sameDocument") == "events"
        shot(driver, artifacts, "10-events-live")

    await in_browser(event_live)
    assert sorted(p.name for p in artifacts.glob("*.png")) == [
        "01-fleet.png", "02-fleet-filtered.png", "03-fleet-bad-filter.png", "04-node-hostile-fact.png",
        "05-jobs.png", "06-job.png", "07-audit-denied.png", "08-job-running.png", "09-job-live-complete.png",
        "10-events-live.png"]


async def rpc_in_background(fleet: HostileFleet, command: str) -> str:
    """`nmc rpc shell run command=... --background --json` as a user types it: the job id it prints."""
    config = fleet.root / "client-admin.cfg"
    fleet.client_config("admin")  # writes it
    env = {"HOME": str(fleet.root), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nmc", "--config", str(config), "rpc", "shell", "run", f"command={command}",
        "--background", "--json", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    started = json.loads(out)
    assert len(started["targets"]) == NODES, started
    return str(started["job_id"])
