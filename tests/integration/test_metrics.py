"""Prometheus metrics (docs/metrics.md): real daemons, scraped over HTTP and parsed with prometheus-client's parser.

Every wait polls the endpoint (or a log line) until what it waits for shows, within a deadline.
"""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nmc.client.fleet import ClientSettings
from nmc.client.session import fleet_session
from nmc.ops.broker.server import Broker, free_port
from nmc.ops.config.files import load_config
from nmc.ops.config.settings import SettingsError, prometheus_endpoint
from nmc.ops.daemon.metrics import NodeMetrics, ServiceMetrics, refusal_reason, request_status
from nmc.protocol.envelope import Reply
from nmc.protocol.status import Status
from nmc.services.pipeline import Outcome
from tests.integration.daemonkit import DaemonFleet, until
from tests.integration.fleetkit import Fleet

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """GET the endpoint with a real HTTP client and parse it: {(sample name, labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a loopback URL the test made
        assert response.status == 200
        assert response.headers.get("Content-Type", "").startswith("text/plain")
        text = response.read().decode("utf-8")
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    """The sample `metric` with exactly these labels, or None."""
    return samples.get((metric, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def scraped(url: str, ready: Callable[[Samples], bool], what: str, within: float = 30.0) -> Samples:
    """Scrape until `ready(samples)` holds (the node counts a request just after it sent the reply)."""
    last: list[Samples] = [{}]

    async def check() -> bool:
        last[0] = await asyncio.to_thread(scrape, url)
        return bool(ready(last[0]))

    await until(check, within, what)
    return last[0]


DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def assert_documented(exposed: set[str]) -> None:
    """Every nmc_* metric an endpoint exposed is named in docs/metrics.md (a histogram by its base name)."""
    text = DOC.read_text(encoding="utf-8")
    missing = set()
    for name in exposed:
        if not name.startswith("nmc_") or name.endswith("_created"):
            continue
        base = re.sub(r"_(bucket|count|sum)$", "", name) if name not in text else name
        if f"`{base}`" not in text and f"`{name}`" not in text:
            missing.add(name)
    assert not missing, f"docs/metrics.md does not list {sorted(missing)}"


def test_the_docs_example_rules_and_scrape_config_are_valid_yaml():
    import yaml

    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)]
    scrape = next(b for b in blocks if "scrape_configs" in b)
    assert {job["job_name"] for job in scrape["scrape_configs"]} >= {"nmc-node", "nmc-policy", "nmc-audit"}
    rules = next(b for b in blocks if "groups" in b)
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {"NmcNodeSilent", "NmcAuditSpoolGrowing", "NmcPolicyDenialsSpike"} <= set(alerts)
    for rule in alerts.values():
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
    assert "nmc_node_audit_spool_records" in alerts["NmcAuditSpoolGrowing"]["expr"]
    assert 'decision="denied"' in alerts["NmcPolicyDenialsSpike"]["expr"]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


@pytest.mark.timeout(240)
async def test_node_and_policy_daemons_count_requests_by_agent_action_status(nats_server: Broker, tmp_path: Path):
    node_port, policy_port, audit_port = free_port(), free_port(), free_port()
    daemons = DaemonFleet(tmp_path / "fleet", nats_server.url, 2,
                          node_cfg={"authz.mode": "service", "audit.enabled": "false"})
    # node1 serves metrics; node2 does not set the port, so nothing of it listens
    identity, quiet = daemons.identities
    daemons.add_keys(daemons.server_cfg(identity), {"plugin.prometheus.port": str(node_port)})
    daemons.add_keys(daemons.layout.policy_cfg, {"plugin.prometheus.port": str(policy_port)})
    daemons.add_keys(daemons.layout.audit_cfg, {"plugin.prometheus.port": str(audit_port)})
    try:
        policy = daemons.policy().start()
        await policy.wait_for("policy_service_started", within=60)
        audit = daemons.audit().start()
        nodes = await daemons.start_nodes()
        await nodes[identity].wait_for("metrics_listening", within=5)
        url = f"http://127.0.0.1:{node_port}/metrics"

        settings = ClientSettings(collective="nmc")
        async with fleet_session([nats_server.url], signer=daemons.signer(), verifier=daemons.verifier(),
                                 settings=settings) as fc:
            for _ in range(3):
                result = await fc.call("rpcutil", "ping", expect=[identity], direct=True)
                assert [r.identity for r in result.results if r.ok] == [identity], result
            result = await fc.call("rpcutil", "get_fact", {"fact": "role"}, expect=[identity], direct=True)
            assert result.results and result.results[0].ok
            # An action rpcutil does not have: refused as unknown_action, counted under action `_unknown`
            result = await fc.call("rpcutil", "no_such_action", expect=[identity], direct=True)
            assert result.results and result.results[0].status == Status.UNKNOWN_ACTION
        # Someone the dev policy does not allow: denied by the policy service, refused by the node
        async with fleet_session([nats_server.url], signer=daemons.signer("mallory"), verifier=daemons.verifier(),
                                 settings=settings) as fc:
            result = await fc.call("rpcutil", "ping", expect=[identity], direct=True)
            assert result.results and result.results[0].status == Status.ABORTED

        def counted(s: Samples) -> bool:
            return value(s, "nmc_node_requests_total", identity=identity, agent="rpcutil", action="ping",
                         status="aborted") == 1.0

        samples = await scraped(url, counted, "the node to count the denied ping")
        req = "nmc_node_requests_total"
        assert value(samples, req, identity=identity, agent="rpcutil", action="ping", status="ok") == 3.0
        assert value(samples, req, identity=identity, agent="rpcutil", action="get_fact", status="ok") == 1.0
        assert value(samples, req, identity=identity, agent="rpcutil", action="_unknown",
                     status="unknown_action") == 1.0
        # the free text of a reason never becomes a label: a few classes only
        assert value(samples, "nmc_node_refusals_total", identity=identity, reason="unknown_action") == 1.0
        assert value(samples, "nmc_node_refusals_total", identity=identity, reason="unauthorized") == 1.0
        assert {dict(labels).get("reason") for name, labels in samples if name == "nmc_node_refusals_total"} == {
            "unknown_action", "unauthorized"}
        assert value(samples, "nmc_node_authz_decisions_total", identity=identity, decision="allowed") == 5.0
        assert value(samples, "nmc_node_authz_decisions_total", identity=identity, decision="denied") == 1.0
        # one latency observation per request
        assert value(samples, "nmc_node_request_duration_seconds_count", identity=identity, agent="rpcutil",
                     action="ping") == 4.0
        assert value(samples, "nmc_node_request_duration_seconds_bucket", identity=identity, agent="rpcutil",
                     action="ping", le="+Inf") == 4.0
        assert value(samples, "nmc_nats_connected", daemon="node", name=identity) == 1.0
        assert value(samples, "nmc_nats_reconnects_total", daemon="node", name=identity) == 0.0
        assert value(samples, "nmc_node_info", identity=identity, collective="nmc",
                     version=__import__("nmc").__version__) == 1.0
        assert {"nmc_event_loop_lag_seconds", "nmc_event_loop_wakeup_delay_seconds_count"} <= names(samples)
        # only this node is on this endpoint; the other one serves no metrics at all
        assert not [labels for name, labels in samples if ("identity", quiet) in labels]
        assert nodes[quiet].events("metrics_listening") == []

        policy_samples = await scraped(
            f"http://127.0.0.1:{policy_port}/metrics",
            lambda s: value(s, "nmc_policy_decisions_total", decision="denied") == 1.0,
            "the policy service to count its denial")
        # the node caches decisions (authz.cache_ttl): one question each for ping, get_fact, no_such_action
        assert value(policy_samples, "nmc_policy_decisions_total", decision="allowed") == 3.0
        assert value(policy_samples, "nmc_nats_connected", daemon="policy", name="nmc-policy") == 1.0
        assert value(policy_samples, "nmc_policy_files") == 1.0

        await audit.wait_for("metrics_listening", within=30)
        audit_samples = await scraped(f"http://127.0.0.1:{audit_port}/metrics",
                                      lambda s: value(s, "nmc_nats_connected", daemon="audit",
                                                      name="nmc-audit") == 1.0,
                                      "the audit service's connection")
        assert value(audit_samples, "nmc_audit_service_written_total") == 0.0  # audit is off on these nodes

        exposed = names(samples) | names(policy_samples) | names(audit_samples)
        assert_documented(exposed)

        assert nodes[identity].stop() == 0
        assert not listening(node_port)  # the endpoint goes with the daemon
    finally:
        daemons.stop_all()


async def test_in_process_node_on_port_0_and_shared_endpoints(fleet: Fleet):
    metrics = NodeMetrics(port=0)
    assert metrics.endpoint is not None and metrics.endpoint.port > 0 and metrics.endpoint.bind == "127.0.0.1"
    plain = await fleet.add("plain.test")
    node = await fleet.add("n1.test", companions=[metrics])
    assert plain.request_observer is None  # without metrics nothing is timed or counted
    async with fleet.client() as fc:
        await fc.call("rpcutil", "ping", expect=["n1.test", "plain.test"])
        await fc.call("rpcutil", "ping", filter_expr="role=/^db$/", timeout=2)  # broadcast, matches neither: filtered
    samples = await scraped(metrics.url, lambda s: value(
        s, "nmc_node_requests_total", identity="n1.test", agent="rpcutil", action="ping", status="filtered") == 1.0,
        "the filtered ping")
    assert value(samples, "nmc_node_requests_total", identity="n1.test", agent="rpcutil", action="ping",
                 status="ok") == 1.0
    assert "nmc_node_refusals_total" not in names(samples)  # a filter miss is no refusal
    port = metrics.endpoint.port
    await node.stop()
    assert node.request_observer is None and not listening(port)


def test_services_on_one_port_share_one_endpoint():
    class Service:
        decisions = {"allowed": 2, "denied": 1, "refused": 0}
        nc = None
        signer = None

    port = free_port()
    first = ServiceMetrics("policy", Service(), port=port)
    second = NodeMetrics(port=port)  # the same port in one process (nmc dev up): the same endpoint
    try:
        assert first.endpoint is second.endpoint
        samples = scrape(first.url)
        assert not {n for n in names(samples) if n.startswith(("nmc_policy", "nmc_node", "nmc_nats"))}  # not started

        async def started() -> Samples:
            first.start()
            return await asyncio.to_thread(scrape, first.url)

        samples = asyncio.run(started())
        assert value(samples, "nmc_policy_decisions_total", decision="denied") == 1.0
        first.stop()
        assert listening(port)  # the node still uses it
    finally:
        first.stop()
        asyncio.run(second.stop())
    assert not listening(port)


def test_the_port_setting(tmp_path: Path):
    cfg = tmp_path / "server.cfg"
    for text, expected in (("", None), ("plugin.prometheus.port =\n", None), ("plugin.prometheus.port = 0\n", None),
                           ("plugin.prometheus.port = 9464\n", ("127.0.0.1", 9464)),
                           ("plugin.prometheus.port = 9464\nplugin.prometheus.bind = ::1\n", ("::1", 9464))):
        cfg.write_text(text, encoding="utf-8")
        assert prometheus_endpoint(load_config(cfg, kind="server", env={})) == expected, text
    cfg.write_text("plugin.prometheus.port = 70000\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="plugin.prometheus.port must be a TCP port"):
        prometheus_endpoint(load_config(cfg, kind="server", env={}))


@pytest.mark.parametrize(("status", "reason", "label", "klass"), [
    (Status.OK, "", "ok", None),
    (None, "filter does not match", "filtered", None),
    (None, "reply subject '_INBOX.x' is outside the caller's inbox: nothing run, no answer", "dropped",
     "reply_subject"),
    (Status.ABORTED, "not authorized: denied by default (default.policy:3)", "aborted", "unauthorized"),
    (Status.INVALID_DATA, "security: certificate revoked", "invalid_data", "security"),
    (Status.UNKNOWN_ACTION, "unknown agent 'nope'", "unknown_action", "unknown_agent"),
    (Status.MISSING_DATA, "missing required input 'fact'", "missing_data", "invalid_input"),
    (Status.ABORTED, "replay cache full (security.replay_capacity = 10)", "aborted", "replay_capacity"),
    (Status.UNKNOWN_ERROR, "agent puppet is busy: waited 60s for one of its 1 slot(s)", "unknown_error", "busy"),
    (Status.ABORTED, "the package is held", "aborted", "action_failed"),
    (Status.INVALID_DATA, "subject does not match the request's collective/agent/action", "invalid_data",
     "invalid_request"),
])
def test_status_and_reason_classes(status: Status | None, reason: str, label: str, klass: str | None):
    reply = None if status is None else Reply(request_id="r", identity="n", status=status, message=reason,
                                              time=0.0, data={})
    outcome = Outcome(reply, reason)
    assert request_status(outcome) == label
    assert refusal_reason(outcome) == klass


def test_a_taken_port_is_logged_and_the_daemon_runs_without_metrics(tmp_path: Path):
    from structlog.testing import capture_logs

    from nmc.ops.daemon.metrics import node_metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "server.cfg"
        cfg.write_text(f"plugin.prometheus.port = {port}\n", encoding="utf-8")
        with capture_logs() as logs:
            assert node_metrics(load_config(cfg, kind="server", env={})) is None
    [entry] = [e for e in logs if e["event"] == "metrics_unavailable"]
    assert entry["log_level"] == "error" and f"127.0.0.1:{port}" in entry["reason"]
    assert entry["origin"].startswith(str(cfg))
