"""The node daemon's NATS edge: one `nmc-node` micro service per node.

Everything that decides anything lives in `pipeline.py`, signing and
sending the reply included; this module only connects, subscribes the
subjects PROTOCOL.md section 1 derives from the node's facts, classes,
identity and agents, and hands the pipeline a way to publish (`_send`).
Several Node objects can share one process and event loop (the dev fleet
and the simulator do), each with its own connection and certificate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from nmc import __version__
from nmc.audit.hooks import Auditor, NoAudit
from nmc.authz.hooks import AllowAll, Authorizer
from nmc.transport.compat import synced_flush
from nmc.protocol.ddl import AgentSpec
from nmc.protocol.factindex import FactIndex
from nmc.protocol.subjects import agent_requests, class_requests, fact_requests, node_requests
from nmc.security import ReplayCache, Signer, Verifier
from nmc.security.replay import DEFAULT_CAPACITY
from nmc.services.agent import Agent
from nmc.services.companion import Companion
from nmc.services.events import EventPublisher
from nmc.services.facts import NodeFacts
from nmc.services.jobkeeper import JobKeeper
from nmc.transport.micro import MicroService
from nmc.services.pipeline import Outcome, PipelineSettings, RequestPipeline
from nmc.services.replaylog import ReplayJournal
from nmc.transport import connect, daemon_options

__all__ = ["Companion", "Node", "NodeSettings", "SERVICE_NAME"]

SERVICE_NAME = "nmc-node"
log = structlog.get_logger("nmc.node")


@dataclass(frozen=True)
class NodeSettings:
    """Everything a node needs to know about where it lives."""

    identity: str
    collective: str
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    max_request_bytes: int = 1024 * 1024
    agent_timeout: float = 60.0
    tls: Any = None  # ssl.SSLContext for the broker connection, or None
    reconnect_wait: float = 0.5
    fact_index: FactIndex = field(default_factory=FactIndex)
    # `plugin.<agent>.*` settings by agent name (keys without the prefix); each agent gets its own.
    agent_settings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # `agent.action` names answered without a signature (security.unsigned_actions; read-only ones only).
    unsigned_actions: tuple[str, ...] = ()
    # The replay file (security.replay_file): None keeps request ids in memory only, so a
    # restart forgets them (library use and tests; `nmc serve node` always has a file).
    replay_file: Path | None = None
    replay_capacity: int = DEFAULT_CAPACITY  # live request ids remembered at most
    replay_per_caller: int | None = None  # ... of them per caller; None: a tenth of replay_capacity
    clock_skew: float = 5.0  # seconds a request's time may lie in the future
    keep_jobs: bool = True  # store the signed replies of job requests in NMC_JOBS (jobs.enabled)

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("node identity must not be empty")
        if not self.servers:
            raise ValueError("at least one NATS server URL is needed")
        if not self.clock_skew >= 0:
            raise ValueError(f"clock_skew must be 0 or more seconds, got {self.clock_skew!r}")


@dataclass
class Node:
    """One node: a NATS connection, a micro service and a request pipeline."""

    settings: NodeSettings
    signer: Signer
    verifier: Verifier
    agent_classes: Sequence[type[Agent]]
    facts: NodeFacts = field(default_factory=NodeFacts)
    nc: NATS | None = None
    started: float = field(default_factory=time.time)
    companions: Sequence[Companion] = ()
    authorizer: Authorizer = field(default_factory=AllowAll)
    auditor: Auditor = field(default_factory=NoAudit)
    # Called after every request with its subject, the pipeline's Outcome and the seconds it took
    # (the metrics endpoint counts and times requests with it; None, the default: nothing is timed).
    request_observer: Callable[[str, Outcome, float], None] | None = None

    def __post_init__(self) -> None:
        self.identity = self.settings.identity
        self.collective = self.settings.collective
        self._agents = {cls.name: cls(self, settings=self.settings.agent_settings.get(cls.name, {}))
                        for cls in self.agent_classes}
        # Jobs: the signed reply of a job request is also stored in NMC_JOBS (nmc.services.jobkeeper).
        self.jobs = JobKeeper(lambda: self.nc, self.collective, self.identity)
        self.pipeline = RequestPipeline(
            settings=PipelineSettings(identity=self.identity, collective=self.collective,
                                      max_request_bytes=self.settings.max_request_bytes,
                                      agent_timeout=self.settings.agent_timeout,
                                      unsigned_actions=self.settings.unsigned_actions,
                                      clock_skew=self.settings.clock_skew),
            verifier=self.verifier, agents=self._agents, snapshot=self.snapshot,
            replay=ReplayCache(self.settings.replay_capacity, self.settings.replay_per_caller),
            authorizer=self.authorizer, auditor=self.auditor, signer=self.signer, send=self._send,
            keep=self.jobs.keep if self.settings.keep_jobs else None)
        self.service: MicroService | None = None
        self._stopping = False  # set by stop(): the disconnect that follows is ours, not the broker's
        self._log = log.bind(identity=self.identity)

    # NodeContext, for agents
    def snapshot(self) -> NodeFacts:
        """The node's current facts and classes."""
        return self.facts

    def agent_specs(self) -> list[AgentSpec]:
        """DDLs of every loaded agent."""
        return [a.spec() for a in self._agents.values()]

    def stats(self) -> dict[str, Any]:
        """Request counters."""
        return self.pipeline.counters.as_dict()

    async def emit_event(self, kind: str, data: Mapping[str, Any]) -> bool:
        """Publish a lifecycle event of `kind` through the node's EventPublisher companion; whether it went out.

        False, doing nothing, when the node has no EventPublisher (events.enabled = false)
        or it is not running. Never raises for a failed publish (events are best-effort).
        """
        for companion in self.companions:
            if isinstance(companion, EventPublisher):
                return await companion.emit(kind, data)
        return False

    def open_replay_file(self) -> None:
        """Load the replay file (settings.replay_file) before serving; ReplayLogError when it cannot be used.

        `start()` calls it first (a no-op once open), so a node that cannot keep its record of
        request ids does not serve. A file that says the node lost its record makes it refuse
        requests issued before now + clock_skew: logged as `replay_state_lost`.
        """
        path = self.settings.replay_file
        if path is None or self.pipeline.journal is not None:
            return
        journal = ReplayJournal.open(path, capacity=self.pipeline.replay.capacity,
                                     per_caller=self.pipeline.replay.per_caller, skew=self.settings.clock_skew,
                                     max_ttl=self.pipeline.settings.max_ttl, now=time.time())
        self.pipeline.replay, self.pipeline.journal = journal.cache, journal
        if journal.state.startswith("lost"):
            self._log.warning("replay_state_lost", path=str(journal.path), reason=journal.state[len("lost: "):],
                              refused_until_issued_after=journal.cache.not_before,
                              message="requests issued before this node's start (plus the clock-skew allowance) "
                                      "are refused: they may have run already")
        else:
            self._log.info("replay_file_opened", path=str(journal.path), state=journal.state,
                           remembered=len(journal.cache))

    async def start(self, *, give_up_after: float | None = None) -> None:
        """Connect, start the companions (registry record included), then subscribe every request subject.

        The first connection is retried (each failure logged with its reason) until
        `give_up_after` seconds, forever when None; then ConnectError says why. A replay
        file that cannot be used raises ReplayLogError before anything connects.
        """
        self.open_replay_file()
        opts = daemon_options(f"nmc-node {self.identity}", self.settings.servers, self.settings.tls,
                              self.settings.reconnect_wait, inbox=self.signer.name)
        self.nc = await connect(
            opts, give_up_after=give_up_after, on_retry=self._on_connect_failed, error_cb=self._on_error,
            disconnected_cb=self._on_disconnect, reconnected_cb=self._on_reconnect)
        self.service = MicroService(self.nc, name=SERVICE_NAME, version=__version__,
                                    description=f"nmc node {self.identity}",
                                    metadata={"identity": self.identity, "collective": self.collective,
                                              "version": __version__})
        await self.service.start()
        # Companions first: the policy and audit hooks are ready before the first request, and
        # the registry record is put before any request subject is subscribed, so a node that
        # answers is always one the registry lists (clients that expect the registered nodes
        # end on the last one's reply and would not wait for an unlisted one).
        for companion in self.companions:
            await companion.start(self)
        await self._subscribe_requests()
        await synced_flush(self.nc)
        self._log.info("node_started", servers=list(self.settings.servers), agents=sorted(self._agents),
                       service_id=self.service.id)
        if self.settings.unsigned_actions:  # a deliberate hole in "everything is signed": say so at every start
            self._log.warning("unsigned_queries_on", actions=sorted(self.settings.unsigned_actions),
                              message="these read-only actions are answered without a signature, as caller "
                                      "unsigned=nats, where the action policy allows it")

    async def _subscribe_requests(self) -> None:
        assert self.service is not None
        await self.service.add_endpoint("node", node_requests(self.collective, self.identity), self._on_request,
                                        metadata={"route": "node", "identity": self.identity})
        for name in sorted(self._agents):
            await self.service.add_endpoint(f"all-{len(self.service.endpoints)}",
                                            agent_requests(self.collective, name), self._on_request,
                                            metadata={"route": "all", "agent": name})
        await self._subscribe_facts()

    async def _subscribe_facts(self) -> None:
        """Make the class/fact endpoints match the current facts: add new subjects, then drop stale ones.

        Subjects that still apply keep their subscription and new ones are added
        before old ones go, so a request for a fact that holds before and after a
        refresh is never missed (facter's load and memory facts change every time).
        """
        assert self.service is not None
        wanted: dict[str, dict[str, str]] = {}
        for klass in self.facts.classes:
            wanted[class_requests(self.collective, klass)] = {"route": "class", "class": klass}
        for name, value in self.settings.fact_index.entries(self.facts.facts):
            wanted[fact_requests(self.collective, name, value)] = {
                "route": "fact", "fact": name, "value": value}
        current = {ep.subject: ep for ep in self.service.endpoints if ep.name.startswith(("fact-", "class-"))}
        taken = {ep.name for ep in current.values()}
        counters = {"class": 0, "fact": 0}
        for subject, metadata in wanted.items():
            if subject in current:
                continue
            route = metadata["route"]
            while f"{route}-{counters[route]}" in taken:
                counters[route] += 1
            taken.add(ep_name := f"{route}-{counters[route]}")
            await self.service.add_endpoint(ep_name, subject, self._on_request, metadata=metadata)
        for subject, ep in current.items():
            if subject not in wanted:
                await self.service.remove_endpoint(ep.name)

    async def update_facts(self, facts: NodeFacts) -> None:
        """Swap in new facts and re-subscribe fact/class subjects that changed."""
        self.facts = facts
        if self.service is None:
            return
        await self._subscribe_facts()
        if self.nc is not None and self.nc.is_connected:
            await synced_flush(self.nc)
        for companion in self.companions:
            await companion.facts_changed(self)

    async def _on_request(self, msg: Msg) -> str | None:
        """One request: the pipeline decides, signs and sends; the micro service counts refusals as errors."""
        observer = self.request_observer
        started = time.perf_counter() if observer is not None else 0.0
        outcome = await self.pipeline.handle(msg.subject, msg.data, msg.headers, msg.reply)
        if observer is not None:
            observer(msg.subject, outcome, time.perf_counter() - started)
        if outcome.reply is None:
            return None
        return outcome.reason if outcome.reply.status != 0 else None

    async def _send(self, subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        """The pipeline's way out: publish a signed reply on this node's connection."""
        if self.nc is not None:
            await self.nc.publish(subject, body, headers=dict(headers))

    async def stop(self) -> None:
        """Stop answering, finish running actions, close the connection."""
        for companion in self.companions:
            await companion.stop()
        if self.service is not None:
            await self.service.stop()
        if self.nc is not None and not self.nc.is_closed:
            self._stopping = True
            await self.nc.drain()
        if self.pipeline.journal is not None:  # nothing runs any more: mark the replay file cleanly closed
            self.pipeline.journal.close()
            self.pipeline.journal = None
        self._log.info("node_stopped")

    def _on_connect_failed(self, reason: str, attempts: int) -> None:
        self._log.warning("nats_connect_failed", reason=reason, attempts=attempts,
                          servers=list(self.settings.servers))

    async def _on_error(self, exc: Exception) -> None:
        self._log.warning("nats_error", error=str(exc) or type(exc).__name__)

    async def _on_disconnect(self) -> None:
        # A warning only when the broker went away: 5,000 simulated nodes stopping on purpose
        # would otherwise print 5,000 warnings.
        if self._stopping:
            self._log.debug("nats_disconnected", reason="node stopping")
        else:
            self._log.warning("nats_disconnected")

    async def _on_reconnect(self) -> None:
        self._log.info("nats_reconnected", server=str(self.nc.connected_url.netloc) if self.nc and self.nc.connected_url else "")
