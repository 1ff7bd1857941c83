"""A job's kept reply holds "***" for outputs the DDL marks sensitive; the caller's live reply holds the value.

Real certificates, the real pipeline and real signatures; nothing crosses a subject
(tests/integration/test_jobs.py stores and reads kept replies through a secure broker).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from nmc.protocol.ddl import REDACTED, ActionSpec, Output, redact_outputs
from nmc.protocol.envelope import Reply, Request, new_request_id
from nmc.protocol.subjects import node_subject
from nmc.security import CERTIFICATE_HEADER, SIGNATURE_HEADER, ReplayCache, Signer, Verifier, create_ca, issue_certificate
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.facts import NodeFacts
from nmc.services.pipeline import PipelineSettings, RequestPipeline

ME = "node1.example.net"
_CA_KEY, _CA_CERT = create_ca("redaction test CA")
ADMIN = Signer(*issue_certificate(_CA_KEY, _CA_CERT, "admin"))
NODE = Signer(*issue_certificate(_CA_KEY, _CA_CERT, ME))


class Vault(Agent):
    """Hands out a token (sensitive) with its owner (not)."""

    name = "vault"

    @action("issue a token", outputs=(Output("token", sensitive=True), Output("owner"), Output("note", sensitive=True)))
    async def issue(self, req: ActionRequest) -> dict[str, Any]:
        return {"token": "s3cr3t", "owner": "alice"}  # `note` left out: filled with its default (None), nothing to hide


def run(job: str | None) -> tuple[list[tuple[bytes, Mapping[str, str]]], list[tuple[bytes, Mapping[str, str]]]]:
    sent: list[tuple[bytes, Mapping[str, str]]] = []
    kept: list[tuple[bytes, Mapping[str, str]]] = []

    async def send(subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        sent.append((body, headers))

    async def keep(request: Request, body: bytes, headers: Mapping[str, str]) -> None:
        kept.append((body, headers))

    pipeline = RequestPipeline(settings=PipelineSettings(identity=ME, collective="nmc"), verifier=Verifier([_CA_CERT]),
                               agents={"vault": Vault(None)}, snapshot=lambda: NodeFacts(facts={}),
                               replay=ReplayCache(), signer=NODE, send=send, keep=keep)
    req = Request(id=new_request_id(), collective="nmc", agent="vault", action="issue", caller=ADMIN.caller,
                  sender="t", time=time.time(), ttl=60, targets=(ME,), job=job)
    body = req.to_bytes()
    asyncio.run(pipeline.handle(node_subject("nmc", ME, "vault", "issue"), body, ADMIN.headers(body), "_INBOX.admin.x"))
    return sent, kept


def _verified(body: bytes, headers: Mapping[str, str]) -> Reply:
    assert Verifier([_CA_CERT]).verify(body, headers[SIGNATURE_HEADER], headers[CERTIFICATE_HEADER]) == ME
    return Reply.from_bytes(body)


def test_the_caller_gets_the_secret_and_the_kept_copy_is_redacted_and_signed_on_its_own():
    sent, kept = run(job="0123abcd")
    [(live_body, live_headers)], [(kept_body, kept_headers)] = sent, kept
    live, stored = _verified(live_body, live_headers), _verified(kept_body, kept_headers)
    assert live.data["token"] == "s3cr3t" and b"s3cr3t" not in kept_body
    assert dict(stored.data) == {"token": REDACTED, "owner": "alice", "note": None}
    assert (stored.request_id, stored.status, stored.identity) == (live.request_id, live.status, live.identity)


def test_without_a_job_nothing_is_kept():
    sent, kept = run(job=None)
    assert len(sent) == 1 and kept == []


def test_only_a_reply_with_a_sensitive_value_needs_a_second_copy():
    plain = ActionSpec(name="x", outputs=(Output("owner"),))
    assert redact_outputs(plain, {"owner": "alice"}) is None
    assert redact_outputs(None, {"token": "s3cr3t"}) is None
    secret = ActionSpec(name="x", outputs=(Output("token", sensitive=True),))
    assert redact_outputs(secret, {"token": None}) is None
    assert redact_outputs(secret, {"token": "s3cr3t", "extra": 1}) == {"token": REDACTED, "extra": 1}
