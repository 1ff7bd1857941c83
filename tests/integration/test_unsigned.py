"""Unsigned read-only queries on a real fleet: what a `nats req` user gets, with raw nats-py as the tool.

Nothing here signs a request: the bodies are what a user types after `nats req <subject>`.
Replies are checked as a user of the nmc protocol would (the node's signature, its one-line
reason) and the audit trail is read back from the real JetStream stream.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest

from nmc.audit.publisher import AuditSettings, JetStreamAuditor
from nmc.audit.reader import AuditQuery, read_records
from nmc.authz.local import LocalAuthorizer
from nmc.ops import pki
from nmc.protocol.ddl import Input
from nmc.protocol.envelope import Reply
from nmc.protocol.status import Status
from nmc.protocol.subjects import all_subject, node_subject
from nmc.security import CERTIFICATE_HEADER, SIGNATURE_HEADER
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.agents import BUILTIN_AGENTS
from tests.integration.auditkit import connect, trusting, until

NODE = "node1.example.net"


class Vault(Agent):
    """A read-only action with a secret input: allowed unsigned, and its secret must not reach the audit trail."""

    name = "vault"
    description = "test agent"

    @action("is this token valid?", inputs=(Input("token", optional=False, sensitive=True),), readonly=True)
    async def check(self, req: ActionRequest) -> dict[str, Any]:
        return {"valid": req.data["token"] == "s3cret"}


POLICY = """policy default deny
allow\tunsigned=nats\tget_fact check\t*
allow\tcert=alice\t*\t*
"""


def policies(tmp_path: Path, text: str = POLICY) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    (directory / "default.policy").write_text(text)
    return directory


async def nats_req(nc, subject: str, body: bytes) -> tuple[Reply, Any]:
    """`nats req SUBJECT BODY`: no headers; the reply as printed (JSON) and the raw message."""
    msg = await nc.request(subject, body, timeout=5)
    return Reply.from_bytes(msg.data), msg


async def audit_records(nc, expected: int, ca) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        found[:] = [r async for r in read_records(nc.jetstream(), AuditQuery(identity=NODE), verifier=trusting(ca))]
        return len(found) >= expected

    await until(arrived, 10, f"{expected} audit records of {NODE}")
    return found


async def test_an_unsigned_request_is_refused_by_default(fleet):
    await fleet.add(NODE, {"role": "web"})
    nc = await nats.connect(fleet.url)
    try:
        reply, msg = await nats_req(nc, node_subject("nmc", NODE, "rpcutil", "get_fact"), b'{"fact":"role"}')
    finally:
        await nc.close()
    assert reply.status == Status.INVALID_DATA and reply.data == {}
    assert reply.message == ("request protocol must be 'nmc.request.v2', got None; "
                             "hint: unsigned requests are off on this node (security.unsigned_actions is empty)")
    assert fleet.ca.verifier().verify(msg.data, msg.headers[SIGNATURE_HEADER], msg.headers[CERTIFICATE_HEADER]) == NODE


async def test_an_allowlisted_query_the_policy_allows_gets_a_signed_reply_and_an_audit_trail(fleet, tmp_path):
    await fleet.add(NODE, {"role": "web", "country": "de"}, agents=(*BUILTIN_AGENTS, Vault),
                    unsigned_actions=("rpcutil.get_fact", "rpcutil.ping", "vault.check"),
                    authorizer=LocalAuthorizer.from_directory(policies(tmp_path), poll_interval=0.1),
                    auditor=JetStreamAuditor(AuditSettings(spool=tmp_path / "n1.spool", ack_timeout=0.5)))
    nc = await connect(fleet.url)
    try:
        reply, msg = await nats_req(nc, node_subject("nmc", NODE, "rpcutil", "get_fact"), b'{"fact":"role"}')
        printed = json.loads(msg.data)  # what `nats req` prints
        assert (printed["status"], printed["message"], printed["identity"]) == (0, "OK", NODE)
        assert printed["data"] == {"fact": "role", "value": "web"}
        signer = fleet.ca.verifier().verify(msg.data, msg.headers[SIGNATURE_HEADER], msg.headers[CERTIFICATE_HEADER])
        assert signer == NODE, "the reply is signed like every reply"

        secret, _ = await nats_req(nc, node_subject("nmc", NODE, "vault", "check"), b'{"token":"s3cret"}')
        assert (secret.status, secret.data) == (Status.OK, {"valid": True})

        # Allowlisted on the node, but the policy has no rule for unsigned ping: denied, and audited as such.
        denied, _ = await nats_req(nc, node_subject("nmc", NODE, "rpcutil", "ping"), b"")
        assert denied.status == Status.ABORTED
        assert denied.message == ("not authorized: no rule allows unsigned=nats to run rpcutil.ping; "
                                  "policy default deny (default.policy:1)")

        # Not allowlisted: refused before the policy is asked, so there is no audit record for it.
        other, _ = await nats_req(nc, node_subject("nmc", NODE, "rpcutil", "inventory"), b"")
        assert other.status == Status.INVALID_DATA
        assert other.message.endswith("; hint: rpcutil.inventory is not in this node's security.unsigned_actions")

        records = await audit_records(nc, 5, fleet.ca)
    finally:
        await nc.close()
    by_request = {}
    for r in records:
        by_request.setdefault(r["request_id"], []).append(r)
    assert {r["caller"] for r in records} == {"unsigned=nats"}
    assert {r["sender"] for r in records} == {"unknown"}
    assert sorted((r["action"], r["phase"], r["allowed"], r["status"]) for r in records) == [
        ("check", "decision", True, None), ("check", "result", True, 0),
        ("get_fact", "decision", True, None), ("get_fact", "result", True, 0),
        ("ping", "decision", False, None)]
    assert [r["rule"] for r in by_request[reply.request_id]] == ["default.policy:2"] * 2
    assert [r["data"] for r in by_request[reply.request_id]] == [{"fact": "role"}] * 2
    assert [r["data"] for r in by_request[secret.request_id]] == [{"token": "***"}] * 2, "secrets redacted"


async def test_unsigned_queries_are_answered_on_the_node_subject_only(fleet, tmp_path):
    await fleet.add(NODE, {"role": "web"}, unsigned_actions=("rpcutil.get_fact",),
                    authorizer=LocalAuthorizer.from_directory(policies(tmp_path), poll_interval=0.1))
    nc = await nats.connect(fleet.url)
    try:
        reply, _ = await nats_req(nc, all_subject("nmc", "rpcutil", "get_fact"), b'{"fact":"role"}')
    finally:
        await nc.close()
    assert reply.status == Status.INVALID_DATA
    assert reply.message.endswith("; hint: unsigned requests are answered only on "
                                  "nmc.<collective>.node.<identity>.<agent>.<action>")


@pytest.mark.parametrize(("keys", "error"), [
    ({"security.unsigned_actions": "rpcutil.get_fact, puppet.runonce", "authz.mode": "local"},
     "Error: security.unsigned_actions: puppet.runonce is not read-only (its DDL does not say readonly=True), "
     "so it can never be run unsigned (set at {cfg}:6)"),
    ({"security.unsigned_actions": "rpcutil.get_fact"},
     "Error: security.unsigned_actions needs authz.mode = local or service: with authz.mode = none no policy "
     "would decide what the unsigned caller may read (set at {cfg}:6)"),
])
def test_the_node_refuses_to_start_with_a_mutating_action_or_no_policy(test_ca, tmp_path, keys, error):
    test_ca.signer(NODE)
    paths = pki.issued_paths(test_ca.directory, NODE)
    cfg = tmp_path / "server.cfg"
    lines = {"identity": NODE, "plugin.nats.servers": "nats://127.0.0.1:1",
             "plugin.security.ca_file": test_ca.directory / "ca.pem", "plugin.security.cert_file": paths.certificate,
             "plugin.security.key_file": paths.key, **keys, "authz.policydir": policies(tmp_path)}
    cfg.write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
    result = subprocess.run([sys.executable, "-m", "nmc", "serve", "node", "--config", str(cfg)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    # stderr also carries the daemon's log lines (policy_loaded); the error is one line, and the last.
    assert result.stderr.strip().splitlines()[-1] == error.format(cfg=cfg), result.stderr
    assert "Traceback" not in result.stderr
