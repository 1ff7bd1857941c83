"""A Python program reaches the fleet with nmc.client alone: connect, ping, run an action (docs/library.md)."""

from __future__ import annotations

import pytest

from nmc.client.discovery import Targeting
from nmc.client.fleet import ClientSettings
from nmc.client.run import run_action
from nmc.client.session import fleet_session
from nmc.ops import pki
from nmc.security import Signer, Verifier
from nmc.transport import ConnectError


async def test_connect_ping_and_run_with_the_library(fleet, test_ca):
    for name, role in (("web1.test", "web"), ("web2.test", "web"), ("db1.test", "db")):
        await fleet.add(name, {"role": role})
    test_ca.signer("alice")  # issues alice's certificate into the CA directory, as `nmc ops ca issue` does
    issued = pki.issued_paths(test_ca.directory, "alice")
    # What a user of the library writes: certificate, key and fleet CA from files, then connect.
    signer = Signer.from_pem(issued.certificate.read_bytes(), issued.key.read_bytes())
    verifier = Verifier.from_pem((test_ca.directory / "ca.pem").read_bytes())
    async with fleet_session([fleet.url], signer=signer, verifier=verifier,
                             settings=ClientSettings(collective=fleet.collective)) as fc:
        pinged = await fc.discover()
        assert sorted(r.identity for r in pinged.results) == ["db1.test", "web1.test", "web2.test"]
        result = await run_action(fc, "rpcutil", "get_fact", {"fact": "role"}, filter_expr="role=web")
        assert result is not None
        assert sorted((r.identity, r.data["value"]) for r in result.results) == [("web1.test", "web"),
                                                                                 ("web2.test", "web")]
        assert result.no_response == ()
        one = await run_action(fc, "rpcutil", "ping", targeting=Targeting(one=True, limit_seed=1), batch="1")
        assert one is not None and len(one.results) == 1
        assert await run_action(fc, "rpcutil", "ping", filter_expr="role=nothing") is None


async def test_no_broker_is_a_one_line_connect_error(test_ca):
    with pytest.raises(ConnectError) as refused:
        async with fleet_session(["nats://127.0.0.1:1"], signer=test_ca.signer("alice"), verifier=test_ca.verifier(),
                                 connect_timeout=0.5):
            pass
    assert refused.value.reason.startswith("cannot connect to NATS at nats://127.0.0.1:1: ")
    assert "\n" not in refused.value.reason
