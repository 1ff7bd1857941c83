"""`nmc find --dm registry --quiet-after SECONDS`: registry records not refreshed for that long are marked quiet.

A node refreshes its record (and says `alive`) every registerinterval; a record
whose `last_seen` is older than two intervals belongs to a node that went
quiet. The stale record is written into the bucket directly, as a node that
stopped refreshing would have left it.
"""

from __future__ import annotations

import json
import time

import nats
import pytest

from nmc.protocol.registry import RegistryEntry, registry_key
from nmc.services.registry import RegistryPublisher, RegistrySettings
from tests.integration.puppetkit import client_env_for, run_nmc


@pytest.mark.timeout(90)
async def test_find_marks_quiet_registry_records(fleet, tmp_path):
    fleet.ca.signer("admin")  # the client's certificate
    await fleet.add("live.test", {"role": "web"},
                    companions=[RegistryPublisher(RegistrySettings(interval=30, ttl=120))])
    nc = await nats.connect(fleet.url)
    try:
        kv = await nc.jetstream().key_value("nmc_registry")
        stale = RegistryEntry(identity="gone.test", collective="nmc", facts={"role": "web"},
                              last_seen=time.time() - 1000)
        await kv.put(registry_key("nmc", "gone.test"), stale.to_bytes())
    finally:
        await nc.drain()
    home = tmp_path / "home"
    home.mkdir()
    env = client_env_for(fleet.url, fleet.ca.directory, home)

    code, out, err = await run_nmc(env, "find", "--dm", "registry", "-F", "role=web", "--quiet-after", "120", "--json")
    assert code == 0, err
    rows = {row["identity"]: row for row in json.loads(out)}
    assert rows["gone.test"]["quiet"] is True and rows["gone.test"]["age_s"] >= 999
    assert rows["live.test"]["quiet"] is False and rows["live.test"]["age_s"] < 120

    code, out, err = await run_nmc(env, "find", "--dm", "registry", "--quiet-after", "120")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("gone.test  QUIET (last seen ") and lines[1] == "live.test"

    code, out, err = await run_nmc(env, "find", "--quiet-after", "120")
    assert code == 4 and "--quiet-after needs --dm registry" in err, (code, err)  # a usage error
