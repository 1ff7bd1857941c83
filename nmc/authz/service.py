"""The action-policy service `nmc-policy`: answers PROTOCOL.md section 5 questions (asyncio/NATS edge).

One ADR-32 micro service instance per process, endpoint `check` on
`nmc.<c>.authz.check` in queue group `nmc-policy`, so replicas share the
load and cover for each other. Each question must be signed by the node it
is about; each answer is signed with the service's own certificate. Every
decision is logged. The policy directory is re-read when it changes and a
signed reload notice tells nodes to drop their cached decisions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from nmc import __version__
from nmc.errors import reason_of
from nmc.authz.policyset import PolicySet
from nmc.authz.watch import PolicyWatcher
from nmc.protocol.authz import AuthzAnswer, AuthzQuestion, ReloadNotice
from nmc.protocol.events import CloudEvent
from nmc.protocol.envelope import EnvelopeError
from nmc.transport.compat import synced_flush
from nmc.protocol.subjects import authz_subject, reloaded_subject
from nmc.security import (
    CERTIFICATE_HEADER,
    SIGNATURE_HEADER,
    SecurityError,
    Signer,
    Verifier,
)
from nmc.security.names import in_inbox_of
from nmc.transport.events import publish_event
from nmc.transport.micro import MicroService
from nmc.transport import connect, daemon_options

__all__ = ["QUEUE_GROUP", "SERVICE_NAME", "PolicyService", "PolicyServiceSettings", "reloaded_event"]

SERVICE_NAME = "nmc-policy"
QUEUE_GROUP = "nmc-policy"
log = structlog.get_logger("nmc.authz")


@dataclass(frozen=True)
class PolicyServiceSettings:
    """Where the service listens and which directory it serves."""

    collective: str
    policydir: Path
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    tls: Any = None  # ssl.SSLContext for the broker connection, or None
    poll_interval: float = 1.0
    reconnect_wait: float = 0.5
    events: bool = True  # publish a signed `policy_reloaded` lifecycle event on every (re)load (events.enabled)

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("at least one NATS server URL is needed")
        if not self.poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {self.poll_interval!r}")


def reloaded_event(collective: str, name: str, policies: PolicySet, reason: str) -> CloudEvent:
    """The `policy_reloaded` event (docs/events.md) of the service signing as `name`, for these policies.

    `reason`: "start" (loaded as the service started) or "changed" (the directory changed, or SIGHUP).
    """
    return CloudEvent(kind="policy_reloaded", collective=collective, identity=name, time=time.time(), data={
        "policies": len(policies.files), "files": sorted(policies.files),
        "errors": [f"{issue.where}: {issue.message}" for issue in policies.errors], "reason": reason})


def _ids(body: bytes) -> tuple[str, str]:
    """request_id and identity from a body we refuse, so the error answer still reaches the right wait."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return "", ""
    if not isinstance(obj, dict):
        return "", ""
    rid, ident = obj.get("request_id"), obj.get("identity")
    return (rid if isinstance(rid, str) else "")[:128], (ident if isinstance(ident, str) else "")[:256]


class PolicyService:
    """One `nmc-policy` instance on its own NATS connection."""

    def __init__(self, settings: PolicyServiceSettings, signer: Signer, verifier: Verifier) -> None:
        self.settings = settings
        self.signer = signer
        self.verifier = verifier
        self.watcher = PolicyWatcher(settings.policydir, interval=settings.poll_interval, on_change=self._announce)
        self.nc: NATS | None = None
        self.service: MicroService | None = None
        self._log = log.bind(service=SERVICE_NAME, signer=signer.name)
        self._stopped = False
        # Answers given since start, for the metrics endpoint: allowed, denied, and questions refused
        # (unsigned, not the asking node's, or a reply subject outside its inbox).
        self.decisions: dict[str, int] = {"allowed": 0, "denied": 0, "refused": 0}

    @property
    def policies(self) -> PolicySet:
        """The policies in force right now."""
        return self.watcher.policies

    async def start(self, *, give_up_after: float | None = None) -> None:
        """Load the policies, connect, subscribe in the queue group, announce, start watching for changes.

        The first connection is retried until `give_up_after` seconds (forever when None), then ConnectError.
        """
        self.watcher.load_now()
        opts = daemon_options(f"{SERVICE_NAME} {self.signer.name}", self.settings.servers, self.settings.tls,
                              self.settings.reconnect_wait)
        self.nc = await connect(opts, give_up_after=give_up_after, on_retry=self._on_connect_failed,
                                error_cb=self._on_error, disconnected_cb=self._on_disconnect,
                                reconnected_cb=self._on_reconnect)
        self.service = MicroService(self.nc, name=SERVICE_NAME, version=__version__,
                                    description="nmc action-policy service",
                                    metadata={"collective": self.settings.collective, "signer": self.signer.name,
                                              "version": __version__})
        await self.service.start()
        await self.service.add_endpoint("check", authz_subject(self.settings.collective), self._on_check,
                                        queue_group=QUEUE_GROUP, metadata={"collective": self.settings.collective})
        await synced_flush(self.nc)
        self.watcher.start()
        await self._announce(self.policies, reason="start")
        self._log.info("policy_service_started", collective=self.settings.collective,
                       policydir=str(self.settings.policydir), service_id=self.service.id,
                       files=len(self.policies.files), errors=len(self.policies.errors))

    def _on_connect_failed(self, reason: str, attempts: int) -> None:
        self._log.warning("nats_connect_failed", reason=reason, attempts=attempts, servers=list(self.settings.servers))

    async def _on_error(self, exc: Exception) -> None:
        self._log.debug("nats_error", error=str(exc) or type(exc).__name__)

    async def _on_disconnect(self) -> None:
        if not self._stopped:
            self._log.warning("nats_disconnected")

    async def _on_reconnect(self) -> None:
        # Subscriptions are renewed by nats-py before this runs: from here on questions are answered again.
        self._log.info("nats_reconnected")

    async def stop(self) -> None:
        """Stop answering (running answers finish), stop watching, close the connection. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self.watcher.stop()
        if self.service is not None:
            # Drain, not unsubscribe: a question the broker already handed to this replica is still
            # answered, so stopping one of two replicas never costs a node a denial.
            for ep in self.service.endpoints:
                sub, ep.subscription = ep.subscription, None
                if sub is not None and self.nc is not None and self.nc.is_connected:
                    await sub.drain()
            if self.nc is not None and not self.nc.is_closed:
                await self.service.stop()
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()
        self._log.info("policy_service_stopped")

    async def reload_now(self) -> bool:
        """Re-read the directory at once (SIGHUP); True when something changed."""
        return await self.watcher.check()

    async def _announce(self, policies: PolicySet, *, reason: str = "changed") -> None:
        if self.nc is None or not self.nc.is_connected:
            return
        body = ReloadNotice(time=time.time(), files=len(policies.files), errors=len(policies.errors)).to_bytes()
        await self.nc.publish(reloaded_subject(self.settings.collective), body, headers=self.signer.headers(body))
        self._log.info("policy_reloaded", files=len(policies.files), errors=len(policies.errors))
        if self.settings.events:
            await publish_event(self.nc, self.signer, reloaded_event(self.settings.collective, self.signer.name,
                                                                     policies, reason))

    async def _on_check(self, msg: Msg) -> str | None:
        if not msg.reply:
            return "question without a reply subject"
        headers = msg.headers or {}
        try:
            name = self.verifier.verify(msg.data, headers.get(SIGNATURE_HEADER), headers.get(CERTIFICATE_HEADER))
            question = AuthzQuestion.from_bytes(msg.data)
            if question.identity != name:
                raise SecurityError(f"a question about node {question.identity!r} signed by {name!r}")
        except (SecurityError, EnvelopeError) as exc:
            reason = reason_of(exc)
            self.decisions["refused"] += 1
            request_id, identity = _ids(msg.data)
            self._log.warning("authz_question_refused", request_id=request_id or None, reason=reason)
            # Whoever sent it is unknown: answer only into some inbox, never onto a subject it chose.
            if in_inbox_of(msg.reply, None):
                await self._answer(msg.reply, AuthzAnswer(request_id=request_id, identity=identity, allowed=False,
                                                          rule="", reason=f"question refused: {reason}",
                                                          time=time.time(), error=True))
            return reason
        if not in_inbox_of(msg.reply, name):
            # The answer goes only into the asking node's own inbox (a confused deputy otherwise).
            reason = f"reply subject {msg.reply!r} is outside the inbox of {name!r}: not answered"
            self.decisions["refused"] += 1
            self._log.warning("authz_question_refused", request_id=question.request_id, reason=reason)
            return reason
        decision = self.policies.decide(caller=question.caller, agent=question.agent, action=question.action,
                                        facts=question.facts, classes=question.classes, identity=question.identity)
        self.decisions["allowed" if decision.allowed else "denied"] += 1
        self._log.info("authz_decision", request_id=question.request_id, caller=question.caller,
                       agent=question.agent, action=question.action, identity=question.identity,
                       allowed=decision.allowed, rule=decision.rule, reason=decision.reason)
        await self._answer(msg.reply, AuthzAnswer(request_id=question.request_id, identity=question.identity,
                                                  allowed=decision.allowed, rule=decision.rule,
                                                  reason=decision.reason, time=time.time()))
        return None

    async def _answer(self, reply: str, answer: AuthzAnswer) -> None:
        if self.nc is None:
            return
        body = answer.to_bytes()
        await self.nc.publish(reply, body, headers=self.signer.headers(body))
