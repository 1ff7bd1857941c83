"""The node's request path, as one plain async function that always answers.

`RequestPipeline.handle` runs the steps in Choria's HandleMessage order:

1. decode: size, subject and body (`_decode`);
2. authenticate: signature, certificate, caller, ttl and clock (`_authenticate`);
3. replay check: an id seen before is refused (`_check_replay`);
   then the reply subject must lie in the caller's inbox (`_reply_refused`, silent);
4. filter: targets, facts, classes, identity, agents (silent when they do not match);
   the id is then remembered, in memory and in the replay file, before any await;
5. authorize: the policy decides, before the node says whether the agent exists,
   so a caller the policy denies learns nothing about which agents are loaded;
6. audit the decision: with `audit.required`, no record kept means nothing runs;
7. resolve the agent and action, validate the inputs against the DDL (`_resolve`);
8. run the action within its time limit (and its agent's concurrency slots);
9. audit the result: every request that passed step 6 gets a result record;
10. sign the reply with the node's certificate (the injected Signer);
11. send it to the reply subject (the injected `send`: node.py wires it to NATS);
12. when the request names a job (`job`), keep the same signed reply (the injected
    `keep`: node.py publishes it to NMC_JOBS), only for the copy that passed the replay
    check, so a replayed copy's refusal never replaces the reply the job really got.

Choria sends before it audits, and issue 15 allowed that order; nmc hands
the result record over first, in every audit mode: `auditor.record()` has
returned for it (JetStreamAuditor: published on the node's connection with
its acknowledgement tracked, or fsync'd in the spool) before the reply is
signed and sent. The reply and the record leave on the same connection, the
record first, and the auditor keeps the record until the stream acknowledged
it, spooling it when no acknowledgement comes (issue 16: the reply no longer
waits a round trip to the stream). So a reply implies that its result
record left on the same connection ahead of it, and the node keeps that
record until the stream acknowledged it; what a node that dies can lose is
the records not yet acknowledged that the broker did not store (those still
in the connection's buffer included), never one the stream acknowledged or
the spool took (tests/integration/test_audit_node.py and
tests/unit/test_pipeline_order.py pin this). `audit.required` is a promise
about the decision record (step 6: nothing runs unless it was kept, so that
record is acknowledged or spooled before the action starts); a result record
that cannot be kept is logged (`audit_result_lost`, or the auditor's
`audit_record_lost` when the spool failed it later) and the reply still goes
out, since the action has run.

Errors map to status codes in exactly one place: `_failure()`.

A message without signature headers may instead be an unsigned read-only
query (nmc/protocol/unsigned.py): admitted only for an allowlisted action on
the node's own subject, it skips steps 2 and 3 and the remembering in step
4, and takes the same path from authorization on, as caller `unsigned=nats`.
Every other unsigned message is refused as before, with a hint saying why
unsigned was not enough.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Mapping

import structlog

from nmc.audit.hooks import Auditor, AuditUnavailable, NoAudit
from nmc.authz.hooks import AllowAll, Authorizer, Decision
from nmc.protocol.audit import AuditRecord
from nmc.protocol.ddl import ActionSpec, InputError, fill_output_defaults, redact_inputs, redact_outputs, validate_inputs
from nmc.protocol.envelope import EnvelopeError, OutdatedRequestError, Reply, Request, new_request_id
from nmc.protocol.filter import FilterSyntaxError, matches, parse
from nmc.protocol.status import Status
from nmc.protocol.subjects import RequestSubject, SubjectError, parse_request_subject
from nmc.protocol.unsigned import (UnsignedConfigError, check_unsigned_actions, parse_unsigned_actions,
                                   unsigned_data, unsigned_refusal, unsigned_request)
from nmc.security import (
    CERTIFICATE_HEADER,
    SIGNATURE_HEADER,
    ReplayCache,
    ReplayCapacityError,
    SecurityError,
    Signer,
    Verifier,
    check_caller,
    check_time,
)
from nmc.security.names import in_inbox_of
from nmc.services.agent import ActionFailed, ActionRequest, Agent
from nmc.services.facts import NodeFacts
from nmc.services.replaylog import ReplayJournal, ReplayLogError

__all__ = ["Counters", "Outcome", "PipelineSettings", "RequestPipeline", "Send"]

log = structlog.get_logger("nmc.node")

# Publishes one signed reply: (reply subject, body, headers). node.py passes the NATS connection's publish.
Send = Callable[[str, bytes, Mapping[str, str]], Awaitable[None]]
# Keeps the signed reply of a job request (request, body, headers): node.py publishes it to NMC_JOBS.
Keep = Callable[[Request, bytes, Mapping[str, str]], Awaitable[None]]
_Handler = Callable[[ActionRequest], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class PipelineSettings:
    """Limits the node enforces on every request."""

    identity: str
    collective: str
    max_request_bytes: int = 1024 * 1024
    max_ttl: float = 3600.0  # bounds the replay cache: a caller cannot ask us to remember forever
    clock_skew: float = 5.0  # how far a request's time may lie in the future (security.clock_skew)
    agent_timeout: float = 60.0
    # `agent.action` names answered without a signature (security.unsigned_actions); empty: none.
    unsigned_actions: tuple[str, ...] = ()


@dataclass
class Counters:
    """MCollective's daemon_stats counters."""

    total: int = 0
    validated: int = 0
    unvalidated: int = 0
    passed: int = 0
    filtered: int = 0
    replies: int = 0
    ttlexpired: int = 0
    unsigned: int = 0  # unsigned read-only queries admitted (they count in none of the above security counters)

    def as_dict(self) -> dict[str, int]:
        """Plain dict for replies."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Outcome:
    """What the pipeline decided: a reply to send (or None: stay silent) and why."""

    reply: Reply | None
    reason: str = ""


class _Rejected(Exception):
    """Internal: stop the pipeline with this status and one-line reason."""

    def __init__(self, status: Status, reason: str, data: Mapping[str, Any] | None = None,
                 request_id: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.data = dict(data or {})
        self.request_id = request_id  # for a refusal before the request was fully decoded


@dataclass
class RequestPipeline:
    """Runs requests for one node; holds only what the request path needs."""

    settings: PipelineSettings
    verifier: Verifier
    agents: Mapping[str, Agent]
    snapshot: Any  # Callable[[], NodeFacts]
    replay: ReplayCache = field(default_factory=ReplayCache)
    journal: ReplayJournal | None = None  # the replay file behind `replay` (None: memory only)
    counters: Counters = field(default_factory=Counters)
    authorizer: Authorizer = field(default_factory=AllowAll)
    auditor: Auditor = field(default_factory=NoAudit)
    # Steps 9 and 10: the node's certificate signs each reply and `send` publishes it. Without a
    # `send` (library use, unit tests) nothing is sent: `handle` returns the reply in its Outcome.
    signer: Signer | None = None
    send: Send | None = None
    # Step 12: the signed reply of a request that names a job (`job`) is also kept, by `keep`.
    keep: Keep | None = None
    _filters: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    _slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.send is not None and self.signer is None:
            raise ValueError("a pipeline that sends replies needs the node's Signer: every reply is signed")
        # Checked here, whoever builds the pipeline: a mutating or unknown action, or no policy to ask,
        # and the node refuses to start (UnsignedConfigError) rather than serve it unsigned.
        self._unsigned = parse_unsigned_actions(self.settings.unsigned_actions)
        check_unsigned_actions(self._unsigned, {name: agent.spec() for name, agent in self.agents.items()})
        if self._unsigned and isinstance(self.authorizer, AllowAll):
            raise UnsignedConfigError("needs authz.mode = local or service: with authz.mode = none no policy "
                                      "would decide what the unsigned caller may read")
        # One semaphore per agent that limits itself (Agent.concurrency > 0): a puppet agent
        # allowing one run at a time queues the second run, while every other agent keeps answering.
        for name, agent in self.agents.items():
            if type(agent).concurrency > 0:
                self._slots[name] = asyncio.Semaphore(type(agent).concurrency)

    def _parsed_filter(self, expr: str) -> Any:
        # Every node parses the same few filters over and over: keep a small LRU.
        node = self._filters.get(expr)
        if node is None:
            node = parse(expr)
            self._filters[expr] = node
            if len(self._filters) > 256:
                self._filters.popitem(last=False)
        else:
            self._filters.move_to_end(expr)
        return node

    def _reply(self, request_id: str, status: Status, message: str, data: Mapping[str, Any] | None = None) -> Reply:
        return Reply(request_id=request_id, identity=self.settings.identity, status=status,
                     message=message, time=time.time(), data=dict(data or {}))

    async def handle(self, subject: str, body: bytes, headers: Mapping[str, str] | None,
                     reply_to: str | None = None) -> Outcome:
        """Process one request message, steps 1 to 11 of the module doc; never raises for bad input.

        `reply_to` is the message's reply subject: a request whose reply subject lies outside
        its caller's inbox runs nothing and gets no answer (see `_reply_refused`). The Outcome
        says what was (or, without `send`, would have been) answered.
        """
        self.counters.total += 1
        request: Request | None = None
        hint = ""  # why an unsigned message was not admitted, added to its refusal
        decision: Decision | None = None  # allowed and audited: from then on a result record follows
        remembered = False  # the id passed the replay check and was recorded: a job reply may be kept
        started = 0.0
        try:
            # 1. decode (an unsigned message may instead be an allowlisted read-only query)
            unsigned = False
            if not headers or (SIGNATURE_HEADER not in headers and CERTIFICATE_HEADER not in headers):
                request, hint = self._admit_unsigned(subject, body)
                unsigned = request is not None
            if request is None:
                request = self._decode(subject, body)
                now = time.time()
                # 2. authenticate, 3. replay check
                self._authenticate(request, body, headers or {}, now)
                self._check_replay(request, now)
            if reply_to and (refused := self._reply_refused(request, reply_to)) is not None:
                return refused
            # 4. filter, then remember the id: no await since the replay check, so a copy
            # arriving meanwhile cannot slip through
            snap: NodeFacts = self.snapshot()
            if not self._matches(request, snap):
                self.counters.filtered += 1
                return Outcome(None, "filter does not match")
            if not unsigned:
                self._remember(request)
                remembered = True
            self.counters.passed += 1
            # 5. authorize, 6. audit the decision
            verdict = await self._authorize(request, snap)
            await self._audit_decision(request, verdict)
            if not verdict.allowed:
                where = f" ({verdict.rule})" if verdict.rule else ""
                raise _Rejected(Status.ABORTED, f"not authorized: {verdict.reason}{where}")
            decision, started = verdict, time.monotonic()
            # 7. resolve the agent and action, validate the inputs
            agent, spec, handler, call = self._resolve(request)
            # 8. run
            reply = await self._execute(request, agent, spec, handler, call)
            outcome = Outcome(reply)
            self.counters.replies += 1
        except _Rejected as exc:
            if hint:  # an unsigned message refused as before: say why unsigned was not enough
                exc = _Rejected(exc.status, f"{exc.reason}; hint: {hint}", exc.data, exc.request_id)
            # Answer with the request id whenever the body parsed, so the client can
            # show the refusal instead of counting this node as silent.
            outcome = self._failure(request.id if request is not None else exc.request_id, exc, subject)
        # 9. audit the result: handed to the auditor before the reply (see the module doc)
        if decision is not None and request is not None and outcome.reply is not None:
            await self._audit_result(request, decision, outcome.reply.status, time.monotonic() - started)
        # 10. sign, 11. send, 12. keep a job's reply (only a first copy's: a replayed copy's
        # refusal must not replace the reply the job really got)
        await self._send_reply(reply_to, outcome.reply, request if remembered else None)
        return outcome

    def _reply_refused(self, request: Request, reply: str) -> Outcome | None:
        """A silent refusal when `reply` is not in the caller's inbox (None when it is).

        The reply subject is the sender's choice; answering outside the caller's own inbox
        would let anyone make this node publish onto another node's registry key or audit
        subject. An unsigned caller has no certificate name: any `_INBOX.` subject then.
        """
        name = request.caller.removeprefix("cert=") if request.caller.startswith("cert=") else None
        if in_inbox_of(reply, name):
            return None
        self.counters.unvalidated += 1
        reason = f"reply subject {reply!r} is outside the caller's inbox: nothing run, no answer"
        log.warning("request_refused", request_id=request.id, caller=request.caller, reason=reason)
        return Outcome(None, reason)

    def _check_size(self, body: bytes) -> None:
        if len(body) > self.settings.max_request_bytes:
            raise _Rejected(Status.INVALID_DATA, f"request of {len(body)} bytes exceeds the limit of "
                                                 f"{self.settings.max_request_bytes} bytes")

    def _admit_unsigned(self, subject: str, body: bytes) -> tuple[Request | None, str]:
        """An unsigned message: (the request to run, "") when admitted, else (None, hint for the refusal)."""
        try:
            routed = parse_request_subject(subject)
        except SubjectError:
            return None, ""  # the signed path's decode says what is wrong with the subject
        refusal = unsigned_refusal(routed, self._unsigned, collective=self.settings.collective,
                                   identity=self.settings.identity)
        if refusal is not None:
            return None, refusal
        self._check_size(body)
        try:
            data = unsigned_data(body)
        except EnvelopeError as exc:
            raise _Rejected(Status.INVALID_DATA, exc.reason) from exc
        # A fresh id, and nothing remembered: replay checks protect actions that change things, and
        # remembering ids of messages anyone can send would let them fill the replay cache.
        self.counters.unsigned += 1
        return unsigned_request(routed, data, request_id=new_request_id(), now=time.time()), ""

    def _decode(self, subject: str, body: bytes) -> Request:
        """Size and shape checks; raises _Rejected with the exact reason."""
        self._check_size(body)
        try:
            routed: RequestSubject = parse_request_subject(subject)
            request = Request.from_bytes(body)
        except OutdatedRequestError as exc:
            raise _Rejected(Status.INVALID_DATA, exc.reason, request_id=exc.request_id) from exc
        except (SubjectError, EnvelopeError) as exc:
            raise _Rejected(Status.INVALID_DATA, exc.reason) from exc
        if (routed.collective, routed.agent, routed.action) != (request.collective, request.agent, request.action):
            raise _Rejected(Status.INVALID_DATA, "subject does not match the request's collective/agent/action")
        if request.collective != self.settings.collective:
            raise _Rejected(Status.INVALID_DATA, f"collective {request.collective!r} is not served here")
        if routed.kind == "node" and request.targets is None:
            # What a node subject carries is meant for chosen nodes; without targets a copy of it
            # (or of a broadcast) would run on any node it is re-published to.
            raise _Rejected(Status.INVALID_DATA, "request on a node subject names no targets: a request to chosen "
                                                 "nodes must list them in 'targets'", request_id=request.id)
        return request

    def _authenticate(self, request: Request, body: bytes, headers: Mapping[str, str], now: float) -> None:
        """Signature, certificate, caller, ttl and time checks, in that order."""
        try:
            name = self.verifier.verify(body, headers.get(SIGNATURE_HEADER), headers.get(CERTIFICATE_HEADER), now=now)
            check_caller(request.caller, name)
            if request.ttl > self.settings.max_ttl:
                raise _Rejected(Status.INVALID_DATA, f"ttl {request.ttl:g}s exceeds the node's maximum of "
                                                     f"{self.settings.max_ttl:g}s")
            try:
                check_time(request.time, request.ttl, now, skew=self.settings.clock_skew)
            except SecurityError:
                self.counters.ttlexpired += 1
                raise
        except SecurityError as exc:
            self.counters.unvalidated += 1
            raise _Rejected(Status.INVALID_DATA, f"security: {exc.reason}") from exc

    def _check_replay(self, request: Request, now: float) -> None:
        """Refuse an id seen before (or issued before the node lost its record of ids).

        Checked before the filter, so a copy re-published where it does not match is refused
        just the same. The last security check: a request that passes counts as `validated`.
        """
        try:
            self.replay.check(request.id, request.time, now)
        except SecurityError as exc:
            self.counters.unvalidated += 1
            raise _Rejected(Status.INVALID_DATA, f"security: {exc.reason}") from exc
        self.counters.validated += 1

    def _matches(self, request: Request, snap: NodeFacts) -> bool:
        if request.targets is not None and self.settings.identity not in request.targets:
            return False  # signed for other nodes: runs nowhere else, whatever subject it came on
        try:
            node = self._parsed_filter(request.filter)
        except FilterSyntaxError as exc:
            raise _Rejected(Status.INVALID_DATA, f"bad filter: {exc}") from exc
        return bool(matches(node, snap.facts, snap.classes, self.settings.identity, self.agents.keys()))

    def _remember(self, request: Request) -> None:
        """Keep the id until the request expires, in memory and in the replay file, before anything runs.

        Only requests that verified and match this node get here: one that cannot run here
        costs the cache nothing. No room, or no file to write to, refuses the request.
        """
        try:
            kept = self.replay.remember(request.id, request.caller, request.time + request.ttl, time.time())
        except ReplayCapacityError as exc:
            setting = "security.replay_per_caller" if exc.scope == "caller" else "security.replay_capacity"
            raise _Rejected(Status.ABORTED, f"{exc.reason} ({setting} = {exc.limit})") from exc
        except SecurityError as exc:
            raise _Rejected(Status.INVALID_DATA, f"security: {exc.reason}") from exc
        if kept and self.journal is not None:
            try:
                self.journal.record(request.id, request.caller, request.time + request.ttl)
            except ReplayLogError as exc:
                raise _Rejected(Status.ABORTED, f"{exc.reason}: refused, because after a restart this node "
                                                f"could not tell that the request ran") from exc

    def _audit_record(self, request: Request, phase: str, decision: Decision, *, status: int | None = None,
                      duration_ms: float | None = None) -> AuditRecord:
        # Inputs the action's DDL marks sensitive are "***" here, so no Auditor ever sees a secret.
        agent = self.agents.get(request.agent)
        spec = agent.spec().actions.get(request.action) if agent is not None else None
        return AuditRecord(phase=phase, request_id=request.id, request_time=request.time, caller=request.caller,
                           sender=request.sender, identity=self.settings.identity, collective=request.collective,
                           agent=request.agent, action=request.action, data=redact_inputs(spec, request.data),
                           allowed=decision.allowed, rule=decision.rule, status=status, duration_ms=duration_ms,
                           time=time.time())

    async def _authorize(self, request: Request, snap: NodeFacts) -> Decision:
        """Ask the authorizer; the caller is the verified certificate name (or `unsigned=nats`)."""
        return await self.authorizer.authorize(
            caller=request.caller, agent=request.agent, action=request.action, identity=self.settings.identity,
            facts=snap.facts, classes=snap.classes, facts_version=snap.version, request_id=request.id)

    async def _audit_decision(self, request: Request, decision: Decision) -> None:
        """Keep the decision record, allowed or not; when audit is required and impossible, nothing runs."""
        try:
            await self.auditor.record(self._audit_record(request, "decision", decision))
        except AuditUnavailable as exc:
            raise _Rejected(Status.ABORTED, f"audit required but unavailable: {exc.reason}") from exc

    async def _audit_result(self, request: Request, decision: Decision, status: Status, elapsed: float) -> None:
        """Keep the result record; one that cannot be kept is logged, since the action already ran."""
        try:
            await self.auditor.record(self._audit_record(request, "result", decision, status=int(status),
                                                         duration_ms=round(elapsed * 1000, 3)))
        except AuditUnavailable:
            log.warning("audit_result_lost", request_id=request.id)  # the action already ran; say so loudly

    def _resolve(self, request: Request) -> tuple[Agent, ActionSpec, _Handler, ActionRequest]:
        """The agent, the action's DDL, its handler and the validated call; unknown ones and bad inputs are refused."""
        agent = self.agents.get(request.agent)
        if agent is None:
            raise _Rejected(Status.UNKNOWN_ACTION, f"unknown agent {request.agent!r}")
        spec = agent.spec().actions.get(request.action)
        handler = agent.handler(request.action)
        if spec is None or handler is None:
            raise _Rejected(Status.UNKNOWN_ACTION, f"unknown action {request.agent}.{request.action}")
        try:
            data = validate_inputs(spec, request.data)
        except InputError as exc:
            raise _Rejected(exc.status, exc.reason) from exc
        return agent, spec, handler, ActionRequest(data=data, caller=request.caller, request_id=request.id,
                                                   sender=request.sender)

    async def _execute(self, request: Request, agent: Agent, spec: ActionSpec, handler: _Handler,
                       call: ActionRequest) -> Reply:
        """Run the action within its time limit, in one of its agent's slots when it limits itself."""
        limit = spec.timeout or self.settings.agent_timeout
        slot = self._slots.get(request.agent)
        if slot is not None:
            # Waiting for a free slot is bounded by the action's own timeout; the run then gets its full time.
            try:
                async with asyncio.timeout(limit):
                    await slot.acquire()
            except asyncio.TimeoutError as exc:
                raise _Rejected(Status.UNKNOWN_ERROR, f"agent {request.agent} is busy: waited {limit:g}s for one of "
                                                      f"its {type(agent).concurrency} slot(s)") from exc
        try:
            # asyncio.timeout, not wait_for: the handler runs in this request's task, not in a new one per run.
            async with asyncio.timeout(limit):
                result = fill_output_defaults(spec, await handler(call))
        except ActionFailed as exc:
            raise _Rejected(exc.status, exc.message, fill_output_defaults(spec, exc.data)) from exc
        except asyncio.TimeoutError as exc:
            raise _Rejected(Status.UNKNOWN_ERROR, f"action timed out after {limit:g}s") from exc
        except Exception as exc:  # noqa: BLE001 - an agent bug must become a status, not a dead node
            log.exception("action_crashed", request_id=request.id, agent=request.agent, action=request.action)
            raise _Rejected(Status.UNKNOWN_ERROR, f"action failed: {type(exc).__name__}: {exc}"[:300]) from exc
        finally:
            if slot is not None:
                slot.release()
        log.info("request_done", request_id=request.id, caller=request.caller, agent=request.agent,
                 action=request.action, status=0)
        return self._reply(request.id, Status.OK, "OK", result)

    async def _send_reply(self, reply_to: str | None, reply: Reply | None, job_request: Request | None = None) -> None:
        """Sign the reply and publish it to `reply_to`; keep it when `job_request` names a job.

        A job's request may come without a reply subject (`nmc rpc --background`): the
        reply is then only kept.
        """
        keep = self.keep if job_request is not None and job_request.job is not None else None
        if reply is None or self.signer is None or ((not reply_to or self.send is None) and keep is None):
            return
        body = reply.to_bytes()
        headers = self.signer.headers(body)
        if reply_to and self.send is not None:
            await self.send(reply_to, body, headers)
        if keep is not None and job_request is not None:
            # The kept copy must not hold what the DDL marks sensitive: the caller got it, the stream keeps "***",
            # signed on its own (a changed body under the first signature would fail verification).
            agent = self.agents.get(job_request.agent)
            kept = redact_outputs(agent.spec().actions.get(job_request.action) if agent is not None else None,
                                  reply.data)
            if kept is not None:
                body = replace(reply, data=kept).to_bytes()
                headers = self.signer.headers(body)
            await keep(job_request, body, headers)

    def _failure(self, request_id: str, exc: _Rejected, subject: str) -> Outcome:
        """The one place where a rejection becomes a reply and a log line."""
        log.warning("request_refused", request_id=request_id or None, subject=subject,
                    status=int(exc.status), reason=exc.reason)
        self.counters.replies += 1
        return Outcome(self._reply(request_id, exc.status, exc.reason, exc.data), exc.reason)
