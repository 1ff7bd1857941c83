"""The web console served with TLS: who a client certificate admits, and that nothing else gets data.

A real secure fleet (tests/adversarial/kit.py), the console in-process on 127.0.0.1 with an
HTTPS server certificate of the fleet CA, and real certificates from our CA code: people's
(roles user, auditor), daemons' (node, policy, console), an expired one, a revoked one and
one from a foreign CA. Access is a person's certificate OR the token; without either, and
with a refused certificate, no page or API call shows any data.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from nmc.ops import pki
from nmc.ops.console.service import ConsoleService, ConsoleTLS
from nmc.security.ca import issue_certificate
from nmc.security.keys import certificate_pem, private_key_pem
from tests.adversarial.kit import HostileFleet, until

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
PAGES = ("/", "/node/node1.example.net", "/jobs", "/audit", "/events", "/api/fleet", "/api/node/node1.example.net",
         "/static/console.css")
NODE = "node1.example.net"
OTHER = "node2.example.net"  # on every page with data; in no refusal


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[HostileFleet]:
    fleet = HostileFleet(tmp_path / "fleet", node_count=2)
    ca = fleet.layout.ca_dir
    pki.issue(ca, "console-web", server=True, force=True)  # the HTTPS server certificate (SAN 127.0.0.1)
    pki.issue(ca, "alice", roles=("user",), force=True)
    pki.issue(ca, "eve", roles=("user",), force=True)
    try:
        yield await fleet.start()
    finally:
        await fleet.stop()


def credentials(fleet: HostileFleet, name: str) -> tuple[Path, Path]:
    paths = pki.issued_paths(fleet.layout.ca_dir, name)
    return paths.certificate, paths.key


def client_tls(fleet: HostileFleet, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """Trusts the fleet CA (the console's server certificate); presents `cert` if given."""
    ctx = ssl.create_default_context(cafile=str(fleet.layout.ca_dir / "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


@pytest.fixture
async def console(fleet: HostileFleet) -> AsyncIterator[ConsoleService]:
    async with serving(fleet) as service:
        yield service


@pytest.fixture
async def alice_only(fleet: HostileFleet) -> AsyncIterator[ConsoleService]:
    async with serving(fleet, allow=frozenset({"alice"})) as service:
        yield service


@contextlib.asynccontextmanager
async def serving(fleet: HostileFleet, allow: frozenset[str] = frozenset(),
                  token: str | None = None) -> AsyncIterator[ConsoleService]:
    """The console with TLS on 127.0.0.1 (a free port), the fleet's `nmc-console` certificate for NATS."""
    cert, key = credentials(fleet, "console-web")
    extra = {"token": token} if token is not None else {}
    service = ConsoleService(fleet.client_config("nmc-console"), bind="127.0.0.1", port=0,
                             tls=ConsoleTLS(cert, key, allow), **extra)
    await service.start(give_up_after=10)
    try:
        yield service
    finally:
        await service.stop()


async def get(console: ConsoleService, ctx: ssl.SSLContext, path: str,
              headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"https://127.0.0.1:{console.bound_port}{path}", ssl=ctx, headers=headers or {},
                     allow_redirects=False) as r:
        return r.status, await r.text()


async def refused(console: ConsoleService, ctx: ssl.SSLContext, path: str = "/api/fleet") -> str:
    """How the console refused: "handshake" (TLS failed) or the status; never any data."""
    try:
        status, body = await get(console, ctx, path)
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
        return "handshake"
    assert status in (401, 403), (path, status, body[:300])
    assert OTHER not in body and '"nodes"' not in body and "<table" not in body  # no data (names a refused node)
    return str(status)


async def test_a_users_certificate_opens_every_page_and_the_api_without_a_token(
        fleet: HostileFleet, console: ConsoleService) -> None:
    assert console.url.startswith(f"https://127.0.0.1:{console.bound_port}/?token=")
    alice = client_tls(fleet, credentials(fleet, "alice"))

    async def listed() -> bool:
        status, body = await get(console, alice, "/api/fleet")
        return status == 200 and NODE in body

    await until(listed, 20, "the nodes on /api/fleet with alice's certificate")
    for path in PAGES:
        status, body = await get(console, alice, path)
        assert status == 200, (path, status, body[:300])
    status, body = await get(console, alice, "/")
    assert NODE in body and "registry read" in body
    ann = client_tls(fleet, credentials(fleet, "ann"))  # roles user and auditor
    assert (await get(console, ann, "/api/fleet"))[0] == 200


async def test_without_a_certificate_only_the_token_opens_it(fleet: HostileFleet, console: ConsoleService) -> None:
    anonymous = client_tls(fleet)
    for path in PAGES:
        assert await refused(console, anonymous, path) == "401"
        status, body = await get(console, anonymous, path, {"Authorization": "Bearer wrong"})
        assert status == 401 and NODE not in body
    status, _ = await get(console, anonymous, "/api/fleet", {"Authorization": f"Bearer {console.token}"})
    assert status == 200  # cert OR token
    status, _ = await get(console, anonymous, f"/?token={console.token}")
    assert status == 302  # the token sets its cookie (Secure, over HTTPS) as without TLS


async def test_daemons_certificates_are_refused_even_of_the_fleet_ca(fleet: HostileFleet,
                                                                     console: ConsoleService) -> None:
    for name in (NODE, "nmc-policy", "nmc-audit", "nmc-console", "nmc-operator", "site1"):
        ctx = client_tls(fleet, credentials(fleet, name))
        for path in ("/", "/api/fleet", "/node/node1.example.net"):
            assert await refused(console, ctx, path) == "403", name
    _, body = await get(console, client_tls(fleet, credentials(fleet, NODE)), "/api/fleet")
    assert "is not a person's" in body


async def test_a_foreign_expired_or_revoked_certificate_is_refused(fleet: HostileFleet, console: ConsoleService,
                                                                   tmp_path: Path) -> None:
    foreign = tmp_path / "foreign-ca"
    pki.init_ca(foreign)
    pki.issue(foreign, "alice", roles=("user",))  # same name and role, another CA
    foreign_paths = pki.issued_paths(foreign, "alice")
    assert await refused(console, client_tls(fleet, (foreign_paths.certificate, foreign_paths.key))) == "handshake"

    ca_key, ca_cert = pki.load_ca(fleet.layout.ca_dir)
    now = dt.datetime.now(dt.UTC)
    key, cert = issue_certificate(ca_key, ca_cert, "alice", roles=("user",), not_before=now - dt.timedelta(days=10),
                                  not_after=now - dt.timedelta(days=1))
    (tmp_path / "expired.pem").write_bytes(certificate_pem(cert))
    (tmp_path / "expired.key").write_bytes(private_key_pem(key))
    expired = client_tls(fleet, (tmp_path / "expired.pem", tmp_path / "expired.key"))
    assert await refused(console, expired) == "handshake"

    eve = credentials(fleet, "eve")
    kept = (Path(shutil.copy(eve[0], tmp_path / "eve.pem")), Path(shutil.copy(eve[1], tmp_path / "eve.key")))
    assert (await get(console, client_tls(fleet, kept), "/api/fleet"))[0] == 200
    await asyncio.to_thread(pki.revoke, fleet.layout.ca_dir, "eve", reason="keyCompromise")

    async def eve_refused() -> bool:  # the console follows the CRL beside the CA (checked every 2 s), no restart
        return (await get(console, client_tls(fleet, kept), "/api/fleet"))[0] != 200

    await until(eve_refused, 15, "eve's revoked certificate refused")
    assert await refused(console, client_tls(fleet, kept)) == "403"
    assert "revoked" in (await get(console, client_tls(fleet, kept), "/"))[1]


async def test_the_allow_list_admits_its_names_only(fleet: HostileFleet, alice_only: ConsoleService) -> None:
    assert (await get(alice_only, client_tls(fleet, credentials(fleet, "alice")), "/api/fleet"))[0] == 200
    admin = client_tls(fleet, credentials(fleet, "admin"))
    assert await refused(alice_only, admin) == "403"
    assert "allow list" in (await get(alice_only, admin, "/"))[1]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_tls_below_1_2_is_refused(fleet: HostileFleet, console: ConsoleService) -> None:
    old = client_tls(fleet, credentials(fleet, "alice"))
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await get(console, old, "/api/fleet")


async def test_without_a_token_only_certificates_open_it(fleet: HostileFleet) -> None:
    async with serving(fleet, token="") as console:
        assert console.url == f"https://127.0.0.1:{console.bound_port}/"
        anonymous = client_tls(fleet)
        for headers in ({}, {"Authorization": "Bearer "}):
            status, body = await get(console, anonymous, "/api/fleet", headers)
            assert status == 401 and NODE not in body
        assert (await get(console, anonymous, "/api/fleet?token="))[0] == 401
        assert (await get(console, client_tls(fleet, credentials(fleet, "alice")), "/api/fleet"))[0] == 200
    plain = ConsoleService(fleet.client_config("nmc-console"), bind="127.0.0.1", port=0, token="")
    with pytest.raises(Exception, match="needs TLS"):
        await plain.start(give_up_after=5)


async def test_the_command_serves_https_with_the_options_and_prints_its_url(fleet: HostileFleet,
                                                                          tmp_path: Path) -> None:
    cert, key = credentials(fleet, "console-web")
    cfg = fleet.root / "client-nmc-console.cfg"
    fleet.client_config("nmc-console")  # writes cfg
    with (tmp_path / "console.err").open("w") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nmc", "serve", "console", "--config", str(cfg), "--port", "0",
            "--tls-cert", str(cert), "--tls-key", str(key), "--allow-cert", "alice", "--no-token",
            stdout=asyncio.subprocess.PIPE, stderr=err)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("nmc console: open https://127.0.0.1:"), (line, (tmp_path / "console.err").read_text())
        url = line.split("open ", 1)[1].strip()
        assert "token" not in url
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "api/fleet", ssl=client_tls(fleet, credentials(fleet, "alice"))) as r:
                assert r.status == 200
            async with http.get(url + "api/fleet", ssl=client_tls(fleet, credentials(fleet, "admin"))) as r:
                assert r.status == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
