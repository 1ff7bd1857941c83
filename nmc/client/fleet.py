"""The client library: discover nodes, send one signed request, gather verified replies.

Discovery is a broadcast `rpcutil.ping` that ends when replies stall. An RPC
to a discovered set is published ONCE (on the narrowest subject the routing
invariant allows) and ends the moment every discovered node has answered;
the nodes that did not are named in the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping

import structlog
from nats.aio.client import Client as NATS

from nmc.errors import reason_of
from nmc.client.request_many import NoRespondersError, Publication, is_no_responders, request_many
from nmc.protocol.envelope import EnvelopeError, Reply, Request, new_request_id
from nmc.protocol.factindex import FactIndex
from nmc.protocol.filter import Route, parse, route
from nmc.protocol.status import Status
from nmc.protocol.subjects import all_subject, class_subject, fact_subject, node_subject
from nmc.security import CERTIFICATE_HEADER, SIGNATURE_HEADER, SecurityError, Signer, Verifier

__all__ = ["CallResult", "ClientSettings", "FleetClient", "NodeResult"]

log = structlog.get_logger("nmc.client")
_DEFAULT_METHODS = ("auto", "broadcast", "registry")


@dataclass(frozen=True)
class ClientSettings:
    """How the client talks to the fleet."""

    collective: str = "nmc"
    timeout: float = 10.0
    discovery_timeout: float = 2.0
    discovery_stall: float = 0.3
    ttl: float = 60.0
    sender: str = "localhost"
    fact_index: FactIndex = field(default_factory=FactIndex)
    registry_bucket: str = "nmc_registry"  # JetStream KV bucket read by `--dm registry`
    # What `auto` discovery means (client.cfg default_discovery_method): "auto" reads the registry
    # and broadcasts when it lists nobody; "broadcast" or "registry" always use that method.
    discovery_method: str = "auto"

    def __post_init__(self) -> None:
        for name in ("timeout", "discovery_timeout", "discovery_stall", "ttl"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.discovery_method not in _DEFAULT_METHODS:
            raise ValueError(f"unknown default discovery method {self.discovery_method!r} "
                             f"(use {', '.join(_DEFAULT_METHODS)})")


@dataclass(frozen=True)
class NodeResult:
    """One node's verified reply, with the time it took to arrive."""

    identity: str
    status: Status
    message: str
    data: Mapping[str, Any]
    elapsed: float  # seconds from publish to arrival

    @property
    def ok(self) -> bool:
        """True when the node ran the action successfully."""
        return self.status == Status.OK


@dataclass(frozen=True)
class CallResult:
    """Everything one request produced: replies, who stayed silent, timings."""

    request_id: str
    agent: str
    action: str
    subject: str
    results: tuple[NodeResult, ...]
    discovered: tuple[str, ...] | None = None
    no_response: tuple[str, ...] = ()
    elapsed: float = 0.0
    dropped: int = 0  # replies that failed verification
    no_responders: bool = False
    # Nobody subscribed to the agent's broadcast subject: no node of the collective serves the agent
    # (nodes subscribe one such subject per agent they have), so the discovered nodes are not silent.
    agent_unserved: bool = False
    job_id: str | None = None  # the job that keeps this call's replies (nmc.client.jobs), if any

    @property
    def failed(self) -> tuple[NodeResult, ...]:
        """Replies with a non-OK status."""
        return tuple(r for r in self.results if not r.ok)


@dataclass
class FleetClient:
    """Signs requests, picks subjects, gathers and verifies replies."""

    nc: NATS
    signer: Signer
    verifier: Verifier
    settings: ClientSettings = field(default_factory=ClientSettings)
    on_reply: Callable[[NodeResult], None] | None = None

    def _route(self, filter_expr: str) -> Route:
        return route(parse(filter_expr), self.settings.fact_index.covers)

    def subject_for(self, filter_expr: str, agent: str, action: str) -> str:
        """The narrowest subject that cannot miss a matching node (PROTOCOL.md routing invariant)."""
        return self._subject(self._route(filter_expr), agent, action)

    def _subject(self, r: Route, agent: str, action: str) -> str:
        c = self.settings.collective
        if r.kind == "node":
            return node_subject(c, r.name, agent, action)
        if r.kind == "fact":
            return fact_subject(c, r.name, r.value, agent, action)
        if r.kind == "class":
            return class_subject(c, r.name, agent, action)
        return all_subject(c, agent, action)

    def build_request(self, agent: str, action: str, data: Mapping[str, Any], filter_expr: str, *,
                      targets: Collection[str] | None = None,
                      job: str | None = None) -> tuple[Request, bytes, dict[str, str]]:
        """A signed request: the envelope, its exact body bytes and the signature headers.

        `targets`: the identities it may run on (it must have them to go to a node's own
        subject); None: every node its filter matches, from a broadcast, fact or class subject.
        `job`: the job it belongs to: the nodes also keep their signed replies (nmc.client.jobs).
        """
        req = self._envelope(agent, action, data, filter_expr, targets, job)
        body = req.to_bytes()
        return req, body, self.signer.headers(body)

    def _envelope(self, agent: str, action: str, data: Mapping[str, Any], filter_expr: str,
                  targets: Collection[str] | None = None, job: str | None = None) -> Request:
        return Request(id=new_request_id(), collective=self.settings.collective, agent=agent, action=action,
                       caller=self.signer.caller, sender=self.settings.sender, time=time.time(),
                       ttl=self.settings.ttl, data=dict(data), filter=filter_expr,
                       targets=tuple(targets) if targets is not None else None, job=job)

    def _publications(self, agent: str, action: str, data: Mapping[str, Any] | None, filter_expr: str,
                      expect: Collection[str] | None, direct: bool,
                      job: str | None) -> tuple[Request, str, bytes, dict[str, str] | None, list[Publication] | None]:
        """The request and where it goes: (request, subject shown, body, headers, per-node publications)."""
        if direct:
            if expect is None:
                raise ValueError("direct addressing needs the identities to expect")
            req = self._envelope(agent, action, data or {}, filter_expr, job=job)
            targets = self._addressed(req, expect, agent, action)
            subject = targets[0].subject if len(targets) == 1 else f"{len(targets)} node subjects"
            return req, subject, b"", None, targets
        r = self._route(filter_expr)
        # Routed to one node's own subject (an exact identity filter): it names that node as its target.
        req, body, headers = self.build_request(agent, action, data or {}, filter_expr,
                                                targets=(r.name,) if r.kind == "node" else None, job=job)
        return req, self._subject(r, agent, action), body, headers, None

    async def send(self, agent: str, action: str, data: Mapping[str, Any] | None = None, *, filter_expr: str = "",
                   expect: Collection[str] | None = None, direct: bool = False, job: str) -> str:
        """Publish a job's request and return its id at once: nobody gathers, the nodes keep their replies.

        The request goes without a reply subject, so the nodes answer only into the job
        (`nmc rpc --background`); `nmc jobs show` reads the replies later.
        """
        req, subject, body, headers, targets = self._publications(agent, action, data, filter_expr, expect,
                                                                  direct, job)
        for pub in targets if targets is not None else [Publication(subject, body, headers)]:
            await self.nc.publish(pub.subject, pub.payload, headers=pub.headers)
        await self.nc.flush()
        return req.id

    def _addressed(self, req: Request, identities: Collection[str], agent: str, action: str) -> list[Publication]:
        """One body per node, signed with `targets` naming that node alone, on its own subject.

        Each node's copy names only that node, so whoever holds it (the node, or anyone it
        passes it to) cannot make any other node run it. All copies share one id.
        """
        c, headers = self.settings.collective, self.signer.headers
        return [Publication(node_subject(c, name, agent, action), body, headers(body))
                for name, body in req.bodies_for_each(sorted(set(identities)))]

    def _verify(self, msg: Any, request_id: str, started: float) -> NodeResult | None:
        """A verified NodeResult, or None (with a warning) for a forged or malformed reply."""
        headers = msg.headers or {}
        try:
            reply = Reply.from_bytes(msg.data)
            name = self.verifier.verify(msg.data, headers.get(SIGNATURE_HEADER), headers.get(CERTIFICATE_HEADER))
            if name != reply.identity:
                raise SecurityError(f"reply claims identity {reply.identity!r} but is signed by {name!r}")
        except (EnvelopeError, SecurityError) as exc:
            log.warning("reply_dropped", reason=reason_of(exc), request_id=request_id)
            return None
        if reply.request_id == "" and reply.status != Status.OK:
            # A node that could not read the request at all, e.g. one older than nmc.request.v2:
            # it cannot name the request, so this is not a result, but its reason is worth showing.
            log.warning("reply_dropped", reason=f"{reply.identity} could not read the request: {reply.message}",
                        request_id=request_id, identity=reply.identity)
            return None
        if reply.request_id != request_id:
            log.warning("reply_dropped", reason="reply to another request", request_id=request_id)
            return None
        return NodeResult(identity=reply.identity, status=reply.status, message=reply.message,
                          data=reply.data, elapsed=time.monotonic() - started)

    async def call(self, agent: str, action: str, data: Mapping[str, Any] | None = None, *,
                   filter_expr: str = "", expect: Collection[str] | None = None,
                   timeout: float | None = None, stall: float | None = None, direct: bool = False,
                   job: str | None = None) -> CallResult:
        """Publish one request and gather replies.

        With `expect` (the discovered identities) gathering ends the moment all
        of them answered, or at `timeout`; without it, when replies stall.
        With `direct`, the request goes to each expected node's own subject
        (a subset chosen by --limit, or a list from a file), signed for that node
        alone (`targets`): nobody else runs it, wherever a copy is re-published.
        With `job`, the nodes also keep their signed replies in that job.
        """
        req, subject, body, headers, targets = self._publications(agent, action, data, filter_expr, expect,
                                                                  direct, job)
        expected = set(expect) if expect is not None else None
        wait = timeout if timeout is not None else self.settings.timeout
        use_stall = None if expected is not None else (stall or self.settings.discovery_stall)
        results: dict[str, NodeResult] = {}
        dropped = 0
        unreachable = 0  # direct subjects nobody listens on: those nodes cannot answer
        answered = 0  # replies from expected nodes
        no_responders = False
        started = time.monotonic()
        if expected is not None and not expected:
            return CallResult(req.id, agent, action, subject, (), discovered=(), elapsed=0.0)
        try:
            async with contextlib.aclosing(request_many(self.nc, subject, body, headers=headers,
                                                        timeout=wait, stall=use_stall, publish_to=targets)) as replies:
                async for msg in replies:
                    if is_no_responders(msg):
                        # Direct addressing only: request_many names the one target nobody listens on.
                        unreachable += 1
                        if expected is not None and answered + unreachable >= len(expected):
                            break
                        continue
                    result = self._verify(msg, req.id, started)
                    if result is None:
                        dropped += 1
                        continue
                    if result.identity in results:
                        continue
                    results[result.identity] = result
                    if self.on_reply is not None:
                        self.on_reply(result)
                    if expected is not None and result.identity in expected:
                        answered += 1
                        if answered + unreachable >= len(expected):
                            break
        except NoRespondersError:
            no_responders = True
        elapsed = time.monotonic() - started
        unserved = no_responders and subject == all_subject(self.settings.collective, agent, action)
        missing = tuple(sorted(expected - set(results))) if expected is not None and not unserved else ()
        return CallResult(req.id, agent, action, subject, tuple(results.values()),
                          discovered=tuple(sorted(expected)) if expected is not None else None,
                          no_response=missing, elapsed=elapsed, dropped=dropped, no_responders=no_responders,
                          agent_unserved=unserved)

    async def discover(self, filter_expr: str = "", *, timeout: float | None = None,
                       stall: float | None = None) -> CallResult:
        """Broadcast discovery: ping every node the filter can match; ends when replies stall."""
        result = await self.call("rpcutil", "ping", {}, filter_expr=filter_expr,
                                 timeout=timeout or self.settings.discovery_timeout,
                                 stall=stall or self.settings.discovery_stall)
        # Nobody answering discovery means no node (matches), whatever the subject: not an agent's absence.
        return dataclasses.replace(result, agent_unserved=False) if result.agent_unserved else result
