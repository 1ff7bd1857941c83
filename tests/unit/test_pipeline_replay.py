"""The pipeline's replay rules (issue 14 holes 1-3): where a request may run, once, with bounded memory.

Real certificates, the real pipeline and a real replay file; nothing crosses a subject
(tests/adversarial/test_replay.py attacks the same rules through a secure broker).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from nmc.protocol.envelope import Reply, Request, new_request_id
from nmc.protocol.status import Status
from nmc.protocol.subjects import all_subject, node_subject
from nmc.security import ReplayCache, Signer, Verifier, create_ca, issue_certificate
from nmc.services.agent import ActionRequest, Agent, action
from nmc.services.facts import NodeFacts
from nmc.services.pipeline import PipelineSettings, RequestPipeline
from nmc.services.replaylog import ReplayJournal, ReplayLogError

ME = "node1.example.net"
_CA_KEY, _CA_CERT = create_ca("replay test CA")
ADMIN = Signer(*issue_certificate(_CA_KEY, _CA_CERT, "admin"))
MALLORY = Signer(*issue_certificate(_CA_KEY, _CA_CERT, "mallory"))


class Counter(Agent):
    """Counts the runs of its one action."""

    name = "counter"
    runs: list[str] = []

    @action("count one run")
    async def bump(self, req: ActionRequest) -> dict[str, Any]:
        Counter.runs.append(req.request_id)
        return {}


def pipeline(replay: ReplayCache | None = None, journal: ReplayJournal | None = None) -> RequestPipeline:
    Counter.runs = []
    return RequestPipeline(settings=PipelineSettings(identity=ME, collective="nmc"), verifier=Verifier([_CA_CERT]),
                           agents={"counter": Counter(None)}, snapshot=lambda: NodeFacts(facts={"role": "web"}),
                           replay=replay if replay is not None else ReplayCache(), journal=journal)


def request(signer: Signer = ADMIN, **over: Any) -> Request:
    fields: dict[str, Any] = dict(id=new_request_id(), collective="nmc", agent="counter", action="bump",
                                  caller=signer.caller, sender="t", time=time.time(), ttl=60, targets=(ME,))
    fields.update(over)
    return Request(**fields)


def send(p: RequestPipeline, req: Request, subject: str | None = None, signer: Signer = ADMIN,
         body: bytes | None = None) -> Reply | None:
    body = body if body is not None else req.to_bytes()
    return asyncio.run(p.handle(subject or node_subject("nmc", ME, "counter", "bump"), body, signer.headers(body))).reply


def test_a_request_runs_only_on_the_nodes_it_names_whatever_the_subject():
    p = pipeline()
    for_node2 = request(targets=("node2.example.net",))
    assert send(p, for_node2, all_subject("nmc", "counter", "bump")) is None  # silent, like a filter mismatch
    assert send(p, for_node2) is None
    assert Counter.runs == [] and len(p.replay) == 0  # it cannot run here, so it takes no room
    ok = send(p, request(targets=("node2.example.net", ME)), all_subject("nmc", "counter", "bump"))
    assert ok is not None and ok.status == Status.OK and len(Counter.runs) == 1


def test_without_targets_a_request_runs_from_broadcast_subjects_only():
    p = pipeline()
    broadcast = request(targets=None)
    refused = send(p, broadcast)
    assert refused is not None and (refused.status, refused.request_id) == (Status.INVALID_DATA, broadcast.id)
    assert refused.message == ("request on a node subject names no targets: a request to chosen nodes must "
                               "list them in 'targets'")
    ran = send(p, broadcast, all_subject("nmc", "counter", "bump"))
    assert ran is not None and ran.status == Status.OK and Counter.runs == [broadcast.id]


def test_a_v1_request_is_answered_with_its_id_and_why():
    p = pipeline()
    req = request()
    old = json.loads(req.to_bytes())
    old["protocol"] = "nmc.request.v1"
    del old["targets"]
    reply = send(p, req, body=json.dumps(old).encode())
    assert reply is not None and (reply.status, reply.request_id) == (Status.INVALID_DATA, req.id)
    assert reply.message == "nmc.request.v1 is no longer accepted: it does not say where it may run; upgrade the client"


def test_a_request_from_the_future_is_refused_and_takes_no_room():
    p = pipeline()
    reply = send(p, request(time=time.time() + 600, ttl=3600))
    assert reply is not None and reply.status == Status.INVALID_DATA
    assert "in the future (allowed clock skew 5s)" in reply.message
    assert len(p.replay) == 0 and Counter.runs == []


def test_the_replay_check_comes_before_the_targets():
    p = pipeline()
    req = request()
    assert send(p, req).status == Status.OK  # type: ignore[union-attr]
    # The same id again, even in a copy that does not name this node: refused, not silent.
    again = send(p, dataclasses.replace(req, targets=("node2.example.net",)))
    assert again is not None and again.message == f"security: request id {req.id!r} was already seen"


def test_a_full_cache_or_quota_refuses_instead_of_forgetting():
    p = pipeline(ReplayCache(4, per_caller=2))
    first = request(MALLORY)
    assert [send(p, r, signer=MALLORY).status for r in (first, request(MALLORY))] == [Status.OK] * 2  # type: ignore[union-attr]
    over = send(p, request(MALLORY), signer=MALLORY)
    assert over is not None and over.status == Status.ABORTED
    assert over.message.startswith("cert=mallory already has 2 unexpired requests remembered on this node")
    assert over.message.endswith("(security.replay_per_caller = 2)")
    assert [send(p, request()).status for _ in range(2)] == [Status.OK] * 2  # type: ignore[union-attr]
    full = send(p, request())
    assert full is not None and full.status == Status.ABORTED and "(security.replay_capacity = 4)" in full.message
    replay = send(p, first, signer=MALLORY)
    assert replay is not None and replay.message == f"security: request id {first.id!r} was already seen"
    assert len(Counter.runs) == 4


def test_every_run_is_in_the_replay_file_before_it_runs(tmp_path: Path):
    journal = ReplayJournal.open(tmp_path / "replay.log", capacity=10, per_caller=10, skew=5.0, max_ttl=3600.0,
                                 now=time.time())
    p = pipeline(journal.cache, journal)
    req = request()
    assert send(p, req).status == Status.OK  # type: ignore[union-attr]
    assert req.id in (tmp_path / "replay.log").read_text()
    journal.close()
    restarted = ReplayJournal.open(tmp_path / "replay.log", capacity=10, per_caller=10, skew=5.0, max_ttl=3600.0,
                                   now=time.time())
    again = send(pipeline(restarted.cache, restarted), req)
    assert again is not None and again.message == f"security: request id {req.id!r} was already seen"
    restarted.close()


def test_a_request_whose_id_cannot_be_written_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    journal = ReplayJournal.open(tmp_path / "replay.log", capacity=10, per_caller=10, skew=5.0, max_ttl=3600.0,
                                 now=time.time())
    p = pipeline(journal.cache, journal)

    def fail(*_: Any) -> None:
        raise ReplayLogError(f"cannot write to replay file {journal.path}: No space left on device")

    monkeypatch.setattr(journal, "record", fail)
    reply = send(p, request())
    assert reply is not None and reply.status == Status.ABORTED and Counter.runs == []
    assert reply.message.endswith("No space left on device: refused, because after a restart this node could not "
                                  "tell that the request ran")
    monkeypatch.undo()
    journal.close()
