"""Running node daemons: from a server config to a Node that serves until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence, cast

import structlog

from nmc.audit.hooks import NoAudit
from nmc.audit.publisher import JetStreamAuditor
from nmc.authz.hooks import AllowAll
from nmc.authz.settings import node_authorizer
from nmc.ops.config.files import Config, etc_dir, find_server_config
from nmc.ops.config.settings import (audit_service_settings, audit_settings, event_settings, event_verifier, SettingsError, authz_settings, crl_warning, fact_refresh_interval, policy_service_settings, fact_sources, load_signer, load_verifier,
                              node_settings, record_verifier, registry_settings, retired_audit_keys)
from nmc.ops.config.settings import prometheus_endpoint
from nmc.protocol.unsigned import UnsignedConfigError
from nmc.services.agent import Agent
from nmc.services.factrefresh import FactRefresher
from nmc.services.loader import PluginError, load_agents
from nmc.services.node import Companion, Node
from nmc.services.registry import RegistryPublisher

if TYPE_CHECKING:  # imported where used: a node daemon does not load the audit or the policy service (issue 16)
    from nmc.audit.service import AuditService
    from nmc.authz.service import PolicyService
    from nmc.ops.daemon.metrics import ServiceMetrics  # and no daemon loads prometheus-client unless asked

__all__ = ["audit_config_path", "build_audit_service", "build_node", "catch_stop_signals", "run_audit_service", "build_policy_service", "policy_config_path", "run_nodes", "run_policy_service", "server_config_path", "service_metrics", "unless_stopped", "wait_for_signal"]

log = structlog.get_logger("nmc.serve")


async def build_node(config: Config, agents: Sequence[type[Agent]] | None = None) -> Node:
    """A ready-to-start Node from a server config, facts collected (SettingsError/FactError/ConfigError).

    Async because collecting facts runs facter and reads files off the event loop.
    A fact source that fails here stops the daemon with one line; later refreshes only warn.
    `agents` None: the built-ins, the `nmc.agents` entry points and the `plugindir` files
    (a plugin that cannot be loaded is a SettingsError, so the daemon refuses to start).
    """
    if agents is None:
        try:
            agents = [loaded.cls for loaded in load_agents(config.get_paths("plugindir"))]
        except PluginError as exc:
            raise SettingsError(exc.reason) from exc
    sources = fact_sources(config)
    refresher = FactRefresher(sources, interval=fact_refresh_interval(config))
    settings, signer, verifier = node_settings(config), load_signer(config), load_verifier(config)
    _warn_without_crl(config, identity=settings.identity)
    facts = await sources.collect(version=0)
    companions: list[Companion] = [refresher]
    registry = registry_settings(config)
    if registry is not None:
        companions.append(RegistryPublisher(registry))
    authorizer = node_authorizer(authz_settings(config), signer=signer, verifier=verifier,
                                 collective=settings.collective)
    if not isinstance(authorizer, AllowAll):  # local or service: both are Companions (their classes load on demand)
        # first: its subscriptions should be up before anything else starts
        companions.insert(0, cast(Companion, authorizer))
    else:
        log.warning("authz_disabled", identity=settings.identity,
                    message="authz.mode = none: every verified caller may run every action here; "
                            "use authz.mode = service or local in production")
    audit = audit_settings(config, settings.identity)
    auditor = JetStreamAuditor(audit) if audit is not None else None
    if auditor is not None:
        companions.append(auditor)  # the same object is the pipeline's Auditor: it needs the node's connection
    else:
        log.warning("audit_disabled", identity=settings.identity, message="audit.enabled = false: no audit records")
    events = event_settings(config)
    if events is not None:
        from nmc.services.events import EventPublisher

        companions.append(EventPublisher(events))  # last: startup is said once every other companion started
    if prometheus_endpoint(config) is not None:  # plugin.prometheus.port: listening from here (docs/metrics.md)
        from nmc.ops.daemon.metrics import node_metrics

        metrics = node_metrics(config)  # None when the port is taken: logged, and the node serves all the same
        if metrics is not None:
            companions.append(cast(Companion, metrics))
    try:
        return Node(settings=settings, signer=signer, verifier=verifier, agent_classes=agents, facts=facts,
                    companions=companions, authorizer=authorizer, auditor=auditor or NoAudit())
    except UnsignedConfigError as exc:  # a mutating or unknown action in the allowlist: refuse to start
        raise SettingsError(f"security.unsigned_actions: {exc.reason} "
                            f"(set at {config.origin('security.unsigned_actions')})") from exc


def _warn_without_crl(config: Config, **context: str) -> None:
    """Say at start that revoked certificates are accepted, when there is no CRL anywhere (see crl_warning)."""
    reason = crl_warning(config)
    if reason is not None:
        log.warning("crl_missing", message=reason, **context)


def _refreshers(node: Node) -> list[FactRefresher]:
    return [c for c in node.companions if isinstance(c, FactRefresher)]


def catch_stop_signals(stop: asyncio.Event | None = None) -> asyncio.Event:
    """From now on SIGINT and SIGTERM set the returned event (call it first thing in a daemon's loop).

    Without it, a Ctrl-C during start-up reaches asyncio.run's own handler, which cancels
    the main task; a library that swallows that cancellation while connecting leaves the
    daemon running with nobody listening for the signal (seen with `nmc dev up`).
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    return stop


async def unless_stopped(step: Awaitable[object], stop: asyncio.Event) -> bool:
    """Await a start-up step (True), or cancel it when `stop` is set first, by a signal (False).

    A daemon that is still connecting (a broker that is down, a TLS mismatch it keeps
    retrying) must still stop on Ctrl-C or SIGTERM at once, not "once started".
    """
    task = asyncio.ensure_future(step)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # the step cleans up after itself (an abandoned connection is closed)
    if task.cancelled():
        if stop.is_set():
            return False
        raise asyncio.CancelledError
    if stop.is_set() and task.exception() is not None:
        return False  # failed while we were stopping anyway
    task.result()  # the step's own error, if any
    return True


async def wait_for_signal(hup_callback: Callable[[], None] | None = None,
                          ready: Callable[[], None] | None = None, stop: asyncio.Event | None = None) -> None:
    """Block until SIGINT or SIGTERM (or until `stop` is set); call `hup_callback()` on every SIGHUP.

    `stop` is the event of an earlier catch_stop_signals(): a signal during start-up then
    ends the wait at once. `ready()` runs once the handlers are in place and no stop is
    pending: whoever announces "ready" from it knows a Ctrl-C from then on stops cleanly.
    """
    loop = asyncio.get_running_loop()
    stop = catch_stop_signals(stop)
    if hup_callback is not None:
        loop.add_signal_handler(signal.SIGHUP, hup_callback)
    if ready is not None and not stop.is_set():
        ready()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def run_nodes(pairs: Sequence[tuple[Node, Config]], ready: Callable[[], None] | None = None,
                    stop: asyncio.Event | None = None, give_up_after: float | None = None) -> None:
    """Start nodes, serve until SIGINT/SIGTERM (SIGHUP re-collects facts now), then stop them cleanly.

    `ready()` runs once every node is started and the signal handlers are in place. A
    signal while they start stops the ones started; `give_up_after` bounds each node's
    first connection (ConnectError naming the reason), None retries until a signal.
    """
    stop = catch_stop_signals(stop)
    started: list[Node] = []
    try:
        for node, _ in pairs:
            started.append(node)  # stopped even when its start is cut short: it may hold a connection
            if not await unless_stopped(node.start(give_up_after=give_up_after), stop):
                return
        await _serve_nodes(pairs, ready, stop)
    finally:
        await asyncio.gather(*(node.stop() for node in started), return_exceptions=True)


async def _serve_nodes(pairs: Sequence[tuple[Node, Config]], ready: Callable[[], None] | None,
                       stop: asyncio.Event) -> None:
    tasks: set[asyncio.Task[bool]] = set()

    def done(task: asyncio.Task[bool]) -> None:
        tasks.discard(task)
        # Fact-source failures are logged by the refresher; anything else must not vanish silently.
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("facts_refresh_crashed", error=str(exc) or type(exc).__name__)

    def on_hup() -> None:
        log.info("facts_reload_requested", signal="SIGHUP", nodes=len(pairs))
        for node, _ in pairs:
            for refresher in _refreshers(node):
                # The refresher logs the outcome and serialises this with its own interval refresh.
                task = asyncio.ensure_future(refresher.refresh_now())
                tasks.add(task)
                task.add_done_callback(done)

    await wait_for_signal(hup_callback=on_hup, ready=ready, stop=stop)


def server_config_path(explicit: str | None) -> Path | None:
    """The server.cfg to use: explicit, else NMC_SERVER_CONFIG / /etc/nmc/server.cfg."""
    if explicit:
        return Path(explicit)
    return find_server_config(os.environ, Path.home())


def build_policy_service(config: Config) -> PolicyService:
    """An unstarted `nmc-policy` service from its config (its own certificate, brokers, policy directory)."""
    from nmc.authz.service import PolicyService

    service = PolicyService(policy_service_settings(config), load_signer(config), load_verifier(config))
    _warn_without_crl(config, service="nmc-policy")
    return service


def service_metrics(config: Config, kind: str, service: PolicyService | AuditService) -> ServiceMetrics | None:
    """The metrics endpoint of the policy (`kind` policy) or audit service, listening, when `plugin.prometheus.port` is set.

    None when it is not, and when the port cannot be listened on (logged as `metrics_unavailable`).
    """
    if prometheus_endpoint(config) is None:
        return None
    from nmc.ops.daemon.metrics import service_metrics as make

    return make(config, kind, service)


async def run_policy_service(service: PolicyService, metrics: ServiceMetrics | None = None) -> None:
    """Start the policy service, serve until SIGINT/SIGTERM (SIGHUP re-reads the policies now), then stop it."""
    tasks: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        log.info("policy_reload_requested", signal="SIGHUP")
        task = asyncio.ensure_future(service.reload_now())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await _serve_until_signal(service, on_hup=on_hup, metrics=metrics)


async def _serve_until_signal(service: PolicyService | AuditService, *,
                              on_hup: Callable[[], None] | None = None,
                              metrics: ServiceMetrics | None = None) -> None:
    """Start the service, serve until SIGINT/SIGTERM (calling `on_hup` on SIGHUP), then stop it (and its metrics)."""
    try:
        stop = catch_stop_signals()  # a signal while it connects stops it at once
        if not await unless_stopped(service.start(), stop):
            await service.stop()
            return
        if metrics is not None:
            metrics.start()
        try:
            await wait_for_signal(hup_callback=on_hup, stop=stop)
        finally:
            await service.stop()
    finally:
        if metrics is not None:
            metrics.stop()


def _service_config_path(explicit: str | None, env_var: str, filename: str) -> Path | None:
    """A service's config: explicit, else $env_var, else <etc dir>/filename if it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get(env_var):
        return Path(os.environ[env_var]).expanduser()
    default = etc_dir(os.environ, Path.home()) / filename
    return default if default.is_file() else None


def policy_config_path(explicit: str | None) -> Path | None:
    """The policy service's config: explicit, else NMC_POLICY_CONFIG, else /etc/nmc/policy.cfg if it exists."""
    return _service_config_path(explicit, "NMC_POLICY_CONFIG", "policy.cfg")


def build_audit_service(config: Config) -> AuditService:
    """An unstarted `nmc-audit` service from its config (brokers, file and position file, rotation, syslog).

    A retired key (`audit.consumer`, `audit.ack_wait`) is reported once with where it is set,
    and otherwise ignored: the service works without it, and an old config keeps working.
    """
    from nmc.audit.service import AuditService

    settings = audit_service_settings(config)
    # Its own certificate signs its audit_backlog events (none without one); audit.events needs the CA to verify.
    signer = load_signer(config) if config.get_path("plugin.security.cert_file") is not None else None
    service = AuditService(settings, record_verifier(config), signer=signer,
                           event_verifier=event_verifier(config) if settings.events else None)
    for key, origin, why in retired_audit_keys(config):
        log.warning("config_key_retired", key=key, origin=origin, message=f"{key} is no longer used: {why}; "
                    "remove it")
    _warn_without_crl(config, service="nmc-audit")
    return service


async def run_audit_service(service: AuditService, metrics: ServiceMetrics | None = None) -> None:
    """Start the audit service, write records until SIGINT/SIGTERM, then stop after the batch in hand."""
    await _serve_until_signal(service, metrics=metrics)


def console_config_path(explicit: str | None) -> Path | None:
    """The web console's config: explicit, else NMC_CONSOLE_CONFIG, else /etc/nmc/console.cfg if it exists."""
    return _service_config_path(explicit, "NMC_CONSOLE_CONFIG", "console.cfg")


def audit_config_path(explicit: str | None) -> Path | None:
    """The audit service's config: explicit, else NMC_AUDIT_CONFIG, else /etc/nmc/audit.cfg if it exists."""
    return _service_config_path(explicit, "NMC_AUDIT_CONFIG", "audit.cfg")
