"""Hole 6: the streams' configuration belongs to the operator, not to a running daemon's certificate.

With the audit certificate, `$JS.API.STREAM.UPDATE.NMC_AUDIT` could add request
subjects to the audit stream, which every user may read; a node certificate could
create the stream or the registry bucket with settings of its choosing when it came
first. Now only the `operator` role (`nmc audit setup`, `nmc ops setup`) creates and
changes them; what users read there is audit records only, and the audit service
writes audit.jsonl readable by its owner and group only.
"""

from __future__ import annotations

import asyncio
import json
import stat
import sys

from nmc.audit.stream import STREAM
from tests.adversarial.brokerkit import REFUSED, js_api, stream_info
from tests.adversarial.kit import HostileFleet, until

REGISTRY = "KV_nmc_registry"
DAEMONS_AND_USERS = ("nmc-audit", "node9.example.net", "nmc-policy", "mallory", "admin", "site1")


async def test_no_daemon_or_user_can_create_or_change_a_stream(hostile: HostileFleet):
    errors: list[str] = []
    admin = await hostile.connect_as("admin", errors=errors)
    audit_config = (await stream_info(admin, STREAM, errors))["config"]
    registry_config = (await stream_info(admin, REGISTRY, errors))["config"]
    spying = {**audit_config, "subjects": ["nmc.audit.>", "nmc.nmc.>"]}  # requests into a stream users read
    attempts = [
        (f"$JS.API.STREAM.UPDATE.{STREAM}", spying),
        (f"$JS.API.STREAM.CREATE.{STREAM}", spying),
        (f"$JS.API.STREAM.UPDATE.{REGISTRY}", {**registry_config, "allow_rollup_hdrs": True, "deny_purge": False}),
        (f"$JS.API.STREAM.CREATE.{REGISTRY}", registry_config),
        ("$JS.API.STREAM.CREATE.SPY", {"name": "SPY", "subjects": ["nmc.nmc.>"]}),
        (f"$JS.API.STREAM.PURGE.{STREAM}", {}),
        (f"$JS.API.STREAM.DELETE.{REGISTRY}", b""),
    ]
    for name in DAEMONS_AND_USERS:
        own: list[str] = []
        nc = await hostile.connect_as(name, errors=own)
        for subject, body in attempts:
            answer = await js_api(nc, subject, body, errors=own)
            assert answer is REFUSED, f"{name} may send {subject}: {answer}"
    assert (await stream_info(admin, STREAM, errors))["config"]["subjects"] == ["nmc.audit.>"]
    assert (await stream_info(admin, REGISTRY, errors))["config"] == registry_config


async def test_the_operator_certificate_sets_the_audit_streams_max_age(hostile: HostileFleet):
    config = hostile.client_config("nmc-operator").source
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nmc", "--config", str(config), "audit", "setup", "--max-age", "7d", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["max_age_s"] == 7 * 86400
    errors: list[str] = []
    admin = await hostile.connect_as("admin", errors=errors)
    assert (await stream_info(admin, STREAM, errors))["config"]["max_age"] == 7 * 86400 * 10**9


async def test_the_audit_file_is_readable_by_owner_and_group_only(hostile: HostileFleet):
    async with hostile.client("admin") as fc:
        await fc.call("rpcutil", "ping", {}, expect=hostile.identities)
    await until(lambda: len(hostile.audit_records()) >= 2 * len(hostile.identities), 20, "the ping's audit records")
    assert stat.S_IMODE(hostile.audit_file.stat().st_mode) == 0o640


async def test_setup_with_a_user_certificate_is_refused_in_one_line(hostile: HostileFleet):
    config = hostile.client_config("admin").source
    # A user may look the streams up (setup with nothing to change succeeds), but not change them.
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nmc", "--config", str(config), "ops", "setup",
                                                "--audit-max-age", "7d",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, err.decode()
    assert "does this certificate have role `operator`?" in lines[0]
