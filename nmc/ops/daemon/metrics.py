"""What `nmc serve node|policy|audit` expose on `plugin.prometheus.port` (docs/metrics.md lists every metric).

`NodeMetrics` is a node Companion: started with the node, it counts and times
every request (Node.request_observer), counts the authorizer's decisions, and
reads the NATS connection and the audit publisher and spool at scrape time.
`ServiceMetrics` does the same for the policy and the audit service (their
counters, their connection). Both take an endpoint from
`nmc.transport.metrics.acquire`: daemons of one process that name the same
port share it (`nmc dev up`), so every node metric carries `identity`.

Labels stay bounded whatever callers send: agent and action are the loaded
agents' and their DDLs' (anything else is `_unknown`), status is one of the
six reply statuses or `filtered`/`dropped`, and a refusal's reason is one of
the few classes `refusal_reason` knows, never the free text of the reply.
Nothing here is loaded unless a daemon's config sets the port.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import structlog

from nmc import __version__
from nmc.authz.hooks import Authorizer, Decision
from nmc.ops.config.files import Config
from nmc.ops.config.settings import prometheus_endpoint
from nmc.protocol.status import Status
from nmc.protocol.subjects import SubjectError, parse_request_subject
from nmc.services.companion import NodeHandle
from nmc.services.pipeline import Outcome
from nmc.transport.metrics import MetricsEndpoint, Sample, acquire, nats_connection_samples, release

__all__ = ["NodeMetrics", "ServiceMetrics", "node_metrics", "refusal_reason", "service_metrics"]

log = structlog.get_logger("nmc.metrics")

UNKNOWN = "_unknown"  # an agent or action this node does not have (the label stays bounded)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0)

# Prefixes of the pipeline's reasons (nmc.services.pipeline), first match wins.
_REASONS: tuple[tuple[str, str], ...] = (
    ("not authorized", "unauthorized"),
    ("security: ", "security"),
    ("audit required but unavailable", "audit_unavailable"),
    ("unknown agent", "unknown_agent"),
    ("unknown action", "unknown_action"),
    ("reply subject", "reply_subject"),
    ("request of ", "too_large"),
    ("input '", "invalid_input"),
    ("unknown input", "invalid_input"),
    ("missing required input", "invalid_input"),
    ("action timed out", "timeout"),
    ("action failed: ", "action_crashed"),
    ("collective ", "wrong_collective"),
)


def refusal_reason(outcome: Outcome) -> str | None:
    """Why a request was not answered OK, as one of a few classes; None for OK and for a filter that did not match.

    Classes: unauthorized, security (signature, certificate, CRL, replay, expiry), audit_unavailable,
    unknown_agent, unknown_action, reply_subject, too_large, invalid_input, timeout, busy,
    action_crashed, wrong_collective, replay_capacity, invalid_request (anything else wrong with the
    message), action_failed (the agent reported a failure status), dropped (no answer, other reasons).
    """
    reply, reason = outcome.reply, outcome.reason
    if reply is not None and reply.status == 0:
        return None
    if reply is None and reason == "filter does not match":
        return None
    if "security.replay_capacity" in reason or "security.replay_per_caller" in reason:
        return "replay_capacity"
    if reason.startswith("agent ") and " is busy: " in reason:
        return "busy"
    for prefix, name in _REASONS:
        if reason.startswith(prefix):
            return name
    if reply is None:
        return "dropped"
    return "invalid_request" if reply.status in (Status.INVALID_DATA, Status.MISSING_DATA) else "action_failed"


def request_status(outcome: Outcome) -> str:
    """The `status` label: the reply's status name, or filtered / dropped when there was no reply."""
    if outcome.reply is None:
        return "filtered" if outcome.reason == "filter does not match" else "dropped"
    try:
        return Status(outcome.reply.status).name.lower()
    except ValueError:
        return str(int(outcome.reply.status))


class _CountingAuthorizer:
    """The node's authorizer, its decisions counted (allowed / denied)."""

    def __init__(self, inner: Authorizer, count: Any) -> None:
        self.inner = inner
        self._count = count

    async def authorize(self, *, caller: str, agent: str, action: str, identity: str,
                        facts: Mapping[str, Any], classes: Collection[str], facts_version: int,
                        request_id: str) -> Decision:
        decision = await self.inner.authorize(caller=caller, agent=agent, action=action, identity=identity,
                                              facts=facts, classes=classes, facts_version=facts_version,
                                              request_id=request_id)
        self._count("allowed" if decision.allowed else "denied")
        return decision


class NodeMetrics:
    """A node's metrics on a shared endpoint; a Companion (see the module doc)."""

    def __init__(self, bind: str = "127.0.0.1", port: int = 0) -> None:
        self.bind, self.port = bind, port
        self.endpoint: MetricsEndpoint | None = acquire(bind, port)  # OSError: the port cannot be listened on
        self._node: Any = None
        self._names: dict[str, frozenset[str]] = {}
        self._cache: dict[str, tuple[str, str]] = {}

    @property
    def url(self) -> str:
        """The endpoint's URL (its bound port)."""
        assert self.endpoint is not None
        return self.endpoint.url

    async def start(self, node: NodeHandle) -> None:
        """Hook into the node: its requests, its authorizer, its connection and audit publisher."""
        if self.endpoint is None:
            self.endpoint = acquire(self.bind, self.port)
        endpoint = self.endpoint
        self._node = node
        identity = node.identity
        self._names = {spec.name: frozenset(spec.actions) for spec in node.agent_specs()}
        requests = endpoint.counter("nmc_node_requests_total",
                                    "Requests this node handled, by agent, action and status (the reply's, or "
                                    "filtered / dropped when it did not answer)",
                                    ("identity", "agent", "action", "status"))
        latency = endpoint.histogram("nmc_node_request_duration_seconds",
                                     "Seconds from receiving a request to sending its reply (or deciding not to)",
                                     ("identity", "agent", "action"), buckets=_LATENCY_BUCKETS)
        refusals = endpoint.counter("nmc_node_refusals_total",
                                    "Requests not answered OK, by the class of the reason (docs/metrics.md)",
                                    ("identity", "reason"))
        decisions = endpoint.counter("nmc_node_authz_decisions_total",
                                     "Authorization decisions of this node's authorizer (authz.mode), "
                                     "allowed or denied", ("identity", "decision"))
        for decision in ("allowed", "denied"):
            decisions.labels(identity, decision)  # both series exist from the start: rate() sees the first denial

        def observe(subject: str, outcome: Outcome, seconds: float) -> None:
            agent, action = self._agent_action(subject)
            requests.labels(identity, agent, action, request_status(outcome)).inc()
            latency.labels(identity, agent, action).observe(seconds)
            reason = refusal_reason(outcome)
            if reason is not None:
                refusals.labels(identity, reason).inc()

        node.request_observer = observe  # type: ignore[attr-defined]
        pipeline = getattr(node, "pipeline", None)
        if pipeline is not None and not isinstance(pipeline.authorizer, _CountingAuthorizer):
            pipeline.authorizer = _CountingAuthorizer(pipeline.authorizer,
                                                      lambda d: decisions.labels(identity, d).inc())
        endpoint.add_source(f"node:{identity}", self._samples)
        endpoint.watch_loop()

    def _agent_action(self, subject: str) -> tuple[str, str]:
        names = self._cache.get(subject)
        if names is not None:
            return names
        try:
            routed = parse_request_subject(subject)
        except SubjectError:
            return UNKNOWN, UNKNOWN
        actions = self._names.get(routed.agent)
        if actions is None:
            names = (UNKNOWN, UNKNOWN)
        else:
            names = (routed.agent, routed.action if routed.action in actions else UNKNOWN)
        if len(self._cache) < 4096:  # a node serves few subjects; a flood of made-up ones is not remembered
            self._cache[subject] = names
        return names

    def _samples(self) -> Iterator[Sample]:
        node = self._node
        if node is None:
            return
        identity = node.identity
        labels = {"identity": identity}
        yield Sample("nmc_node_info", "gauge", "1, with the node's identity, collective and nmc version",
                     {"identity": identity, "collective": node.collective, "version": __version__}, 1)
        yield Sample("nmc_node_start_time_seconds", "gauge", "When the node started (Unix time)",
                     labels, float(getattr(node, "started", 0.0)))
        yield from nats_connection_samples(node.nc, {"daemon": "node", "name": identity})
        yield from audit_publisher_samples(getattr(node, "auditor", None), labels)

    async def facts_changed(self, node: NodeHandle) -> None:
        """Nothing to do: the labels do not depend on facts."""

    async def stop(self) -> None:
        """Unhook from the node and give the endpoint up (it stops listening after its last user)."""
        if self._node is not None:
            self._node.request_observer = None
            pipeline = getattr(self._node, "pipeline", None)
            if pipeline is not None and isinstance(pipeline.authorizer, _CountingAuthorizer):
                pipeline.authorizer = pipeline.authorizer.inner
        if self.endpoint is not None:
            if self._node is not None:
                self.endpoint.remove_source(f"node:{self._node.identity}")
            release(self.endpoint)
            self.endpoint = None


def audit_publisher_samples(auditor: Any, labels: dict[str, str]) -> Iterator[Sample]:
    """The node's audit publisher (nmc.audit.publisher.JetStreamAuditor) and its spool, read as they are."""
    if auditor is None or not hasattr(auditor, "published"):
        return  # audit.enabled = false
    for attr, name, doc in (
            ("published", "nmc_node_audit_published_total", "Audit records the stream acknowledged on the first try"),
            ("resent", "nmc_node_audit_resent_total", "Spooled audit records the stream acknowledged later"),
            ("lost", "nmc_node_audit_lost_total", "Audit records neither the stream nor the spool could keep")):
        yield Sample(name, "counter", doc, labels, float(getattr(auditor, attr, 0)))
    yield Sample("nmc_node_audit_in_flight", "gauge", "Audit records published and not yet acknowledged",
                 labels, float(getattr(auditor, "in_flight", 0)))
    spool = getattr(auditor, "spool", None)
    if spool is None:
        return
    yield Sample("nmc_node_audit_spool_records", "gauge", "Audit records waiting in the node's spool for the stream",
                 labels, float(len(spool)))
    described = spool.describe() if hasattr(spool, "describe") else {}
    yield Sample("nmc_node_audit_spool_bytes", "gauge", "Bytes of the node's audit spool file",
                 labels, float(described.get("spool_bytes", 0)))
    yield Sample("nmc_node_audit_spool_oldest_age_seconds", "gauge",
                 "Age of the oldest record in the spool (0 when it is empty)", labels, _oldest_age(spool))


def _oldest_age(spool: Any) -> float:
    try:
        head = spool.head(1)
    except RuntimeError:  # the loop changed the spool while this thread read it: say nothing old this scrape
        return 0.0
    if not head:
        return 0.0
    try:
        made = json.loads(head[0].payload).get("time")
    except (ValueError, AttributeError):
        return 0.0
    return max(0.0, time.time() - float(made)) if isinstance(made, (int, float)) else 0.0


class ServiceMetrics:
    """The policy or the audit service's metrics: call start() once it started, stop() when it stops."""

    def __init__(self, kind: str, service: Any, bind: str = "127.0.0.1", port: int = 0) -> None:
        if kind not in ("policy", "audit"):
            raise ValueError(f"kind must be policy or audit, got {kind!r}")
        self.kind, self.service = kind, service
        self.bind, self.port = bind, port
        self.endpoint: MetricsEndpoint | None = acquire(bind, port)  # OSError: the port cannot be listened on
        self._key = f"{kind}:{id(service)}"

    @property
    def url(self) -> str:
        """The endpoint's URL (its bound port)."""
        assert self.endpoint is not None
        return self.endpoint.url

    def start(self) -> None:
        """Read the service at every scrape from now on (call it inside the service's event loop)."""
        if self.endpoint is None:
            self.endpoint = acquire(self.bind, self.port)
        self.endpoint.add_source(self._key, self._samples)
        self.endpoint.watch_loop()

    def stop(self) -> None:
        """Stop reading it and give the endpoint up (idempotent)."""
        if self.endpoint is not None:
            self.endpoint.remove_source(self._key)
            release(self.endpoint)
            self.endpoint = None

    def _name(self) -> str:
        signer = getattr(self.service, "signer", None)
        return str(getattr(signer, "name", "") or f"nmc-{self.kind}")

    def _samples(self) -> Iterator[Sample]:
        service = self.service
        yield from nats_connection_samples(getattr(service, "nc", None), {"daemon": self.kind, "name": self._name()})
        if self.kind == "policy":
            for decision, count in dict(getattr(service, "decisions", {})).items():
                yield Sample("nmc_policy_decisions_total", "counter",
                             "Answers of the policy service: allowed, denied, or the question refused",
                             {"decision": decision}, float(count))
            policies = getattr(service, "policies", None)
            if policies is not None:
                yield Sample("nmc_policy_files", "gauge", "Policy files in force", {},
                             float(len(getattr(policies, "files", ()))))
                yield Sample("nmc_policy_errors", "gauge", "Problems in the policy files that make something deny", {},
                             float(len(getattr(policies, "errors", ()))))
            return
        counters = getattr(service, "counters", None)
        for attr in ("written", "duplicates", "bad", "refused", "lost", "batches", "sink_errors", "hints"):
            yield Sample(f"nmc_audit_service_{attr}_total", "counter", _AUDIT_DOCS[attr], {},
                         float(getattr(counters, attr, 0)))
        position = getattr(service, "position", None)
        if isinstance(position, int):
            yield Sample("nmc_audit_service_next_sequence", "gauge",
                         "The next NMC_AUDIT stream sequence the service will read", {}, float(position))


_AUDIT_DOCS = {
    "written": "Audit records written to the file (and syslog)",
    "duplicates": "Audit records read again and dropped as already written",
    "bad": "Stream messages that are not audit records",
    "refused": "Audit records that are not genuine (bad signature, wrong node): never written",
    "lost": "Audit records that aged out of the stream before the service read them",
    "batches": "Batches written",
    "sink_errors": "Failed writes to the file or syslog, failed saves of the position",
    "hints": "Messages heard on nmc.audit.> (wake-ups only)",
}


def _open(config: Config, make: Any) -> Any:
    endpoint = prometheus_endpoint(config)
    if endpoint is None:
        return None
    bind, port = endpoint
    try:
        return make(bind, port)
    except OSError as exc:
        # Metrics watch the daemon; they are not worth a node that stops answering. Said loudly, and
        # Prometheus sees the target down (`up == 0`), so it is not missed either.
        log.error("metrics_unavailable", bind=bind, port=port, origin=config.origin("plugin.prometheus.port"),
                  reason=f"cannot listen on {bind}:{port}: {exc.strerror or exc}",
                  message="the daemon runs without its metrics endpoint")
        return None


def node_metrics(config: Config) -> NodeMetrics | None:
    """The node's metrics companion when the config sets `plugin.prometheus.port` (listening already), else None.

    None too, with an error logged (`metrics_unavailable`), when the port cannot be listened on.
    """
    return _open(config, lambda bind, port: NodeMetrics(bind, port))


def service_metrics(config: Config, kind: str, service: Any) -> ServiceMetrics | None:
    """The policy (`kind` policy) or audit service's metrics when the config sets the port, else None."""
    return _open(config, lambda bind, port: ServiceMetrics(kind, service, bind, port))

