"""Jobs on a secure fleet: TLS broker with the generated per-role permissions, policy and audit services.

Every rpc is a job (nmc.client.jobs): the caller's signed start and end records and each
node's signed reply are kept in NMC_JOBS, read back by direct get under the caller's name
and verified again. Only the caller, the auditor role and readers jobs.policy names may read a job.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nmc.client.jobs import JobsError, read_job, wait_job
from nmc.client.run import JobOptions, run_action
from nmc.ops.broker.authorization import TrustSources, secure_broker_settings
from nmc.ops.broker.server import BrokerError
from nmc.protocol.envelope import Reply
from nmc.protocol.jobs import job_subject
from nmc.security import CERTIFICATE_HEADER, SIGNATURE_HEADER
from tests.adversarial.kit import HostileFleet

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
NODES = 10


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[HostileFleet]:
    fleet = HostileFleet(tmp_path / "fleet", node_count=NODES)
    try:
        yield await fleet.start()
    finally:
        await fleet.stop()


async def nmc(fleet: HostileFleet, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI as `name`, run without blocking the event loop the fleet's nodes share with the test."""
    fleet.client_config(name)  # writes client-<name>.cfg
    env = {"NMC_CONFIG": str(fleet.root / f"client-{name}.cfg"), "HOME": str(fleet.root), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nmc", *args, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def test_background_rpc_returns_a_job_whose_replies_are_all_verified_later(fleet: HostileFleet) -> None:
    async with fleet.client("admin") as fc:
        sent = await run_action(fc, "rpcutil", "get_fact", {"fact": "role"}, job=JobOptions(background=True))
        assert sent is not None and sent.job_id and sent.results == ()  # nobody gathered anything
        assert sorted(sent.discovered or ()) == sorted(fleet.identities)
        job = await wait_job(fc.nc, fc.verifier, "nmc", "admin", sent.job_id, limit=60)
    assert sorted(r.identity for r in job.results) == sorted(fleet.identities)
    assert all(r.ok and r.data["fact"] == "role" for r in job.results)
    assert job.missing == () and job.unverified == () and job.end is None  # a background job has no end record
    assert job.start.caller == "admin" and job.start.agent == "rpcutil"


async def test_the_cli_prints_the_job_id_and_jobs_show_renders_it_as_rpc_does(fleet: HostileFleet) -> None:
    sent = await nmc(fleet, "admin", "rpc", "rpcutil", "get_fact", "fact=country", "--background", "--json")
    assert sent.returncode == 0, sent.stderr
    job_id = json.loads(sent.stdout)["job_id"]
    shown = await nmc(fleet, "admin", "jobs", "show", job_id, "--wait", "--json")
    out = json.loads(shown.stdout)
    assert shown.returncode == 0, (out["summary"], out["no_response"], out["job"], shown.stderr)
    assert sorted(r["sender"] for r in out["replies"]) == sorted(fleet.identities)
    assert out["job_id"] == job_id and out["unverified"] == [] and out["no_response"] == []
    listed = json.loads((await nmc(fleet, "admin", "jobs", "list", "--json")).stdout)
    assert [j["id"] for j in listed] == [job_id] and listed[0]["ok"] == NODES
    assert listed[0]["replies_read"]  # a background job has no end record: its replies are read and verified


async def test_jobs_show_prints_the_ddls_summaries_as_rpc_does(fleet: HostileFleet) -> None:
    ran = await nmc(fleet, "admin", "rpc", "package", "status", "package=bash", "--json")
    assert ran.returncode == 0, ran.stderr
    live = json.loads(ran.stdout)
    assert [a["label"] for a in live["aggregates"]] == ["Status", "Version"]
    shown = await nmc(fleet, "admin", "jobs", "show", live["job_id"], "--json")
    assert json.loads(shown.stdout)["aggregates"] == live["aggregates"]
    text = await nmc(fleet, "admin", "jobs", "show", live["job_id"])
    assert "Summary of Version:" in text.stdout and f"= {NODES}" in text.stdout


async def test_an_ordinary_rpc_is_a_job_with_an_end_record(fleet: HostileFleet) -> None:
    async with fleet.client("admin") as fc:
        result = await run_action(fc, "rpcutil", "ping", job=JobOptions())
        assert result is not None and result.job_id and len(result.results) == NODES
        job = await read_job(fc.nc, fc.verifier, "nmc", "admin", result.job_id)
    assert job.end is not None and sorted(job.end.answered) == sorted(fleet.identities)
    assert job.end.request_ids == (result.request_id,)
    assert sorted(r.identity for r in job.results) == sorted(fleet.identities)
    assert (job.end.ok, job.end.failed) == (NODES, 0)
    # `jobs list` summarises it from the signed end record, without reading the 10 replies.
    listed = json.loads((await nmc(fleet, "admin", "jobs", "list", "--json")).stdout)
    assert [(j["id"], j["ok"], j["failed"], j["missing"], j["replies_read"]) for j in listed] == [
        (result.job_id, NODES, 0, 0, False)]


async def test_a_reply_tampered_in_the_stream_is_reported_not_shown(fleet: HostileFleet) -> None:
    victim = fleet.identities[0]
    async with fleet.client("admin") as fc:
        result = await run_action(fc, "rpcutil", "get_fact", {"fact": "role"}, job=JobOptions())
        assert result is not None and result.job_id
        subject = job_subject("nmc", "admin", result.job_id, "reply", victim)
        # The node itself (its key stolen) rewrites its stored reply: same signature, other body.
        genuine = await fc.nc.request(f"$JS.API.DIRECT.GET.NMC_JOBS.{subject}", b"", timeout=5)
        reply = Reply.from_bytes(genuine.data)
        forged = Reply(reply.request_id, reply.identity, reply.status, reply.message, reply.time,
                       {**reply.data, "value": "forged"}).to_bytes()
        thief = await fleet.connect_as(victim)
        await thief.jetstream().publish(subject, forged, headers={
            SIGNATURE_HEADER: genuine.headers[SIGNATURE_HEADER], CERTIFICATE_HEADER: genuine.headers[CERTIFICATE_HEADER]})
        job = await read_job(fc.nc, fc.verifier, "nmc", "admin", result.job_id)
    assert victim not in {r.identity for r in job.results}
    assert [u.subject for u in job.unverified] == [subject]
    assert all(r.data.get("value") != "forged" for r in job.results)
    shown = await nmc(fleet, "admin", "jobs", "show", result.job_id)
    assert shown.returncode == 1 and "FAILED VERIFICATION" in shown.stderr and "forged" not in shown.stdout


async def test_only_the_caller_and_the_auditor_role_read_a_job(fleet: HostileFleet) -> None:
    async with fleet.client("admin") as fc:
        result = await run_action(fc, "rpcutil", "ping", job=JobOptions())
        assert result is not None and result.job_id
    job_id = result.job_id
    async with fleet.client("ann") as auditor:  # role auditor: may read every caller's jobs
        seen = await read_job(auditor.nc, auditor.verifier, "nmc", "admin", job_id)
        assert len(seen.results) == NODES
    errors: list[str] = []
    raw = await fleet.connect_as("mallory", errors=errors)  # a valid user, not the caller
    for kind, identity in (("start", None), ("reply", fleet.identities[0])):
        subject = job_subject("nmc", "admin", job_id, kind, identity)
        with pytest.raises(Exception):
            await raw.request(f"$JS.API.DIRECT.GET.NMC_JOBS.{subject}", b"", timeout=2)
    # Nor through the form with the subject in the body, nor by sequence.
    with pytest.raises(Exception):
        await raw.request("$JS.API.DIRECT.GET.NMC_JOBS", json.dumps({"seq": 1}).encode(), timeout=2)
    with pytest.raises(Exception):
        await raw.request("$JS.API.STREAM.MSG.GET.NMC_JOBS", json.dumps({"seq": 1}).encode(), timeout=2)
    assert sum("permissions violation" in e.lower() for e in errors) >= 4
    async with fleet.client("mallory") as fc:
        with pytest.raises(JobsError, match="auditor role"):
            await read_job(fc.nc, fc.verifier, "nmc", "admin", job_id)
    denied = await nmc(fleet, "mallory", "jobs", "show", job_id, "--caller", "admin")
    assert denied.returncode == 1 and "auditor role" in denied.stderr and "Traceback" not in denied.stderr


async def test_a_node_stores_only_its_own_replies_and_a_user_only_its_own_records(fleet: HostileFleet) -> None:
    errors: list[str] = []
    node = await fleet.connect_as(fleet.identities[1], errors=errors)
    other = job_subject("nmc", "admin", "0123abcd", "reply", fleet.identities[0])
    await node.publish(other, b"{}")
    user = await fleet.connect_as("mallory", errors=errors)
    await user.publish(job_subject("nmc", "admin", "0123abcd", "start"), b"{}")
    await node.flush()
    await user.flush()
    async with fleet.client("ann") as auditor:
        with pytest.raises(JobsError, match="no job"):
            await read_job(auditor.nc, auditor.verifier, "nmc", "admin", "0123abcd")
    assert sum("permissions violation" in e.lower() for e in errors) == 2, errors


@pytest.mark.parametrize("role_name", ["nmc-policy", "nmc-audit", "nmc-console", "mallory"])
async def test_no_other_role_reads_or_writes_a_callers_job(fleet: HostileFleet, role_name: str) -> None:
    async with fleet.client("admin") as fc:
        result = await run_action(fc, "rpcutil", "ping", job=JobOptions())
        assert result is not None and result.job_id
    errors: list[str] = []
    raw = await fleet.connect_as(role_name, errors=errors)
    victim = fleet.identities[0]
    reply = job_subject("nmc", "admin", result.job_id, "reply", victim)
    # Read admin's stored reply; forge admin's end record; overwrite a node's stored reply.
    if role_name != "nmc-console":  # the console reads every caller's jobs (its role), and only reads
        with pytest.raises(Exception):
            await raw.request(f"$JS.API.DIRECT.GET.NMC_JOBS.{reply}", b"", timeout=2)
    await raw.publish(job_subject("nmc", "admin", result.job_id, "end"), b"{}")
    await raw.publish(reply, b"{}")
    await raw.flush()
    async with fleet.client("admin") as fc:
        job = await read_job(fc.nc, fc.verifier, "nmc", "admin", result.job_id)
    assert len(job.results) == NODES and job.unverified == () and job.end is not None
    expected = 2 if role_name == "nmc-console" else 3
    assert sum("permissions violation" in e.lower() for e in errors) == expected, errors


async def test_jobs_policy_lets_a_named_user_read_another_callers_jobs_and_nothing_more(fleet: HostileFleet) -> None:
    """The documented procedure: write jobs.policy in the policy directory, regenerate the broker's config, reload."""
    async with fleet.client("admin") as fc:
        result = await run_action(fc, "rpcutil", "ping", job=JobOptions())
        assert result is not None and result.job_id
    async with fleet.client("ann") as fc:  # ann's own job: the grant below does not reach it
        anns = await run_action(fc, "rpcutil", "ping", job=JobOptions())
        assert anns is not None and anns.job_id
    policies = fleet.layout.policy_dir / "policies"
    (policies / "jobs.policy").write_text("policy default deny\nallow   cert=mallory   read   caller=admin\n")
    assert fleet.broker is not None
    settings, _ = secure_broker_settings(fleet.broker.settings,
                                         TrustSources(ca_dir=fleet.layout.ca_dir, policy_dir=policies))
    await asyncio.to_thread(fleet.broker.reload, settings)

    async with fleet.client("mallory") as fc:
        job = await read_job(fc.nc, fc.verifier, "nmc", "admin", result.job_id)
        assert len(job.results) == NODES and job.unverified == ()
        with pytest.raises(JobsError):
            await read_job(fc.nc, fc.verifier, "nmc", "ann", anns.job_id)
    shown = await nmc(fleet, "mallory", "jobs", "show", result.job_id, "--caller", "admin", "--json")
    assert shown.returncode == 0, shown.stderr
    assert sorted(r["sender"] for r in json.loads(shown.stdout)["replies"]) == sorted(fleet.identities)

    # A jobs.policy with an error grants nothing: the configuration is refused, with where and why.
    (policies / "jobs.policy").write_text("policy default deny\nallow   cert=mallory   read   caller=(admin\n")
    with pytest.raises(BrokerError, match=r"jobs.policy:2: error"):
        secure_broker_settings(fleet.broker.settings, TrustSources(ca_dir=fleet.layout.ca_dir, policy_dir=policies))


async def test_waiting_for_a_job_reads_each_stored_reply_once_more_not_on_every_poll(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nmc.client.jobs as client_jobs

    small = HostileFleet(tmp_path / "small", node_count=3)
    await small.start()
    try:
        async with small.client("admin") as fc:
            first = await fc.call("rpcutil", "ping", {}, expect=small.identities)  # all three registered
            assert len(first.results) == 3
            silent = small.nodes[2]
            await silent.nc.close()  # gone without a goodbye: still in the registry, the job expects it
            sent = await run_action(fc, "rpcutil", "ping", job=JobOptions(background=True))
            assert sent is not None and sent.job_id and len(sent.discovered or ()) == 3
            gets: list[str] = []
            real_get = client_jobs._Reader.get

            async def counting(self: Any, subject: str, who: str) -> Any:
                gets.append(subject)
                return await real_get(self, subject, who)

            monkeypatch.setattr(client_jobs._Reader, "get", counting)
            job = await wait_job(fc.nc, fc.verifier, "nmc", "admin", sent.job_id, limit=2.0)
        assert sorted(r.identity for r in job.results) == small.identities[:2] and len(job.missing) == 1
        replies = [g for g in gets if ".reply." in g]
        # Two seconds of polling every 0.25 s: each reply is read while waiting and once for the answer.
        assert {replies.count(s) for s in set(replies)} <= {1, 2} and len(set(replies)) == 2
    finally:
        await small.stop()
