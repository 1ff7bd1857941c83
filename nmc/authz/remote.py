"""`authz.mode = service`: the node asks the action-policy service (PROTOCOL.md section 5).

For every request the node publishes a signed question on
`nmc.<c>.authz.check` and waits for an answer that verifies against the
fleet CA AND is signed by one of the configured policy signers
(`authz.signers`). Anything else that arrives is ignored with a warning
and the node keeps waiting; with no trusted answer within `authz.timeout`
the request is denied, saying so. Real policy decisions are cached for
`authz.cache_ttl` seconds, keyed by caller, agent, action and the node's
facts version; a reload announcement from a trusted service empties the
cache.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from nmc.errors import reason_of
from nmc.authz.hooks import Decision
from nmc.protocol.authz import AuthzAnswer, AuthzQuestion, ReloadNotice
from nmc.protocol.envelope import EnvelopeError
from nmc.protocol.subjects import authz_subject, reloaded_subject
from nmc.security import (
    CERTIFICATE_HEADER,
    SIGNATURE_HEADER,
    SecurityError,
    Signer,
    Verifier,
)
from nmc.transport.companion import NodeView

__all__ = ["ServiceAuthorizer"]

log = structlog.get_logger("nmc.authz")

_CacheKey = tuple[str, str, str, int]


def _no_responders(msg: Msg) -> bool:
    # nats-server's 503 status message: nobody is subscribed to the subject we published on.
    return not msg.data and msg.headers is not None and msg.headers.get("Status") == "503"


class ServiceAuthorizer:
    """Asks the `nmc-policy` service over NATS; a node Companion for its subscriptions."""

    def __init__(self, nc: NATS | None, signer: Signer, verifier: Verifier, collective: str,
                 signers: Collection[str], timeout: float = 2.0, cache_ttl: float = 60.0, *,
                 cache_size: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        if not signers:
            raise ValueError("authz.signers is empty: no policy answer could ever be trusted")
        if not timeout > 0:
            raise ValueError(f"authz.timeout must be a positive number of seconds, got {timeout!r}")
        if cache_ttl < 0:
            raise ValueError(f"authz.cache_ttl must be 0 (no cache) or more seconds, got {cache_ttl!r}")
        self.nc = nc
        self.signer = signer
        self.verifier = verifier
        self.collective = collective
        self.signers = frozenset(signers)
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[_CacheKey, tuple[float, Decision]] = OrderedDict()
        self._generation = 0  # bumps on every reload notice: answers to older questions are not cached
        self._pending: dict[str, asyncio.Queue[Msg]] = {}
        self._tokens = itertools.count(1)
        self._prefix = ""
        self._subs: list[Subscription] = []
        self._ready = asyncio.Event()
        self._subscribing = asyncio.Lock()

    # Companion
    async def start(self, node: NodeView) -> None:
        """Use the node's connection; subscribe the answer inbox and reload notices."""
        if self.nc is None:
            self.nc = node.nc
        await self._subscribe()

    async def facts_changed(self, node: NodeView) -> None:
        """Decisions for the old facts version can never be used again: drop them."""
        self._cache.clear()

    async def stop(self) -> None:
        """Unsubscribe; questions still waiting end as denials at their timeout."""
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - the connection may already be closing
                log.debug("authz_unsubscribe_failed", error=type(exc).__name__)
        self._subs.clear()
        self._ready.clear()

    async def _subscribe(self) -> None:
        async with self._subscribing:
            if self._ready.is_set() or self.nc is None:
                return
            self._prefix = self.nc.new_inbox()
            self._subs.append(await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_answer))
            self._subs.append(await self.nc.subscribe(reloaded_subject(self.collective), cb=self._on_reload))
            self._ready.set()

    @property
    def cached(self) -> int:
        """How many decisions are cached now."""
        return len(self._cache)

    async def authorize(self, *, caller: str, agent: str, action: str, identity: str,
                        facts: Mapping[str, Any], classes: Collection[str], facts_version: int,
                        request_id: str) -> Decision:
        """The service's decision (or a cached one); a denial saying why when none can be had. Never raises."""
        key = (caller, agent, action, facts_version)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            log.debug("authz_decision", source="cache", request_id=request_id, caller=caller, agent=agent,
                      action=action, allowed=hit[1].allowed, rule=hit[1].rule)
            return hit[1]
        question = AuthzQuestion(request_id=request_id, caller=caller, agent=agent, action=action, identity=identity,
                                 facts=dict(facts), classes=tuple(classes))
        generation = self._generation
        try:
            decision, cacheable = await self._ask(question)
        except Exception as exc:
            log.exception("authz_failed", request_id=request_id)
            return Decision(False, "", f"asking the policy service failed: {type(exc).__name__}: {exc}"[:300])
        if cacheable and self.cache_ttl > 0 and generation == self._generation:
            self._cache[key] = (self._clock() + self.cache_ttl, decision)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        log.debug("authz_decision", source="service", request_id=request_id, caller=caller, agent=agent,
                  action=action, allowed=decision.allowed, rule=decision.rule, reason=decision.reason)
        return decision

    async def _ask(self, question: AuthzQuestion) -> tuple[Decision, bool]:
        """Publish the question and wait for a trusted answer: (decision, may it be cached)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=self.timeout)
        except TimeoutError:
            return Decision(False, "", "policy client is not connected yet (node starting)"), False
        assert self.nc is not None
        token = str(next(self._tokens))
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._pending[token] = queue
        subject = authz_subject(self.collective)
        ignored: list[str] = []
        body = question.to_bytes()
        headers = self.signer.headers(body)
        # Asked once more at half the timeout: a replica that died holding our question (its queue-group
        # share) must not cost a denial while another replica is up.
        retry_at: float | None = deadline - self.timeout / 2
        try:
            await self.nc.publish(subject, body, reply=f"{self._prefix}.{token}", headers=headers)
            while (now := loop.time()) < deadline:
                until = deadline if retry_at is None else min(deadline, retry_at)
                try:
                    msg = await asyncio.wait_for(queue.get(), timeout=max(until - now, 0.0))
                except TimeoutError:
                    if retry_at is not None and loop.time() < deadline:
                        retry_at = None
                        log.info("authz_question_resent", request_id=question.request_id)
                        await self.nc.publish(subject, body, reply=f"{self._prefix}.{token}", headers=headers)
                    continue
                if _no_responders(msg):
                    return Decision(False, "", f"policy service unreachable (nothing subscribed to {subject})"), False
                answer = self._trusted(msg, question, ignored)
                if answer is None:
                    continue
                if answer.error:
                    return Decision(False, answer.rule, f"the policy service refused the question: {answer.reason}"), False
                return Decision(answer.allowed, answer.rule, answer.reason), True
        finally:
            del self._pending[token]
        reason = f"policy service unreachable (no trusted answer within {self.timeout:g}s)"
        if ignored:
            reason += f"; ignored {len(ignored)} untrusted answer(s): {ignored[0]}"
        return Decision(False, "", reason), False

    def _trusted(self, msg: Msg, question: AuthzQuestion, ignored: list[str]) -> AuthzAnswer | None:
        """The answer when it is signed by a trusted policy signer and is for this question; else None (logged)."""
        try:
            self._check_signer(msg)
            answer = AuthzAnswer.from_bytes(msg.data)
            if (answer.request_id, answer.identity) != (question.request_id, question.identity):
                raise SecurityError("an answer to another question")
        except (SecurityError, EnvelopeError) as exc:
            reason = reason_of(exc)
            ignored.append(reason)
            log.warning("authz_answer_ignored", request_id=question.request_id, reason=reason)
            return None
        return answer

    def _check_signer(self, msg: Msg) -> str:
        """The signer's name; SecurityError unless the message is signed by a trusted policy signer."""
        headers = msg.headers or {}
        name = self.verifier.verify(msg.data, headers.get(SIGNATURE_HEADER), headers.get(CERTIFICATE_HEADER))
        if name not in self.signers:
            raise SecurityError(f"signed by {name!r}, which is not a trusted policy signer (authz.signers)")
        return name

    async def _on_answer(self, msg: Msg) -> None:
        queue = self._pending.get(msg.subject[len(self._prefix) + 1 :])
        if queue is not None:
            queue.put_nowait(msg)

    async def _on_reload(self, msg: Msg) -> None:
        try:
            name = self._check_signer(msg)
            notice = ReloadNotice.from_bytes(msg.data)
        except (SecurityError, EnvelopeError) as exc:
            log.warning("authz_reload_notice_ignored", reason=reason_of(exc))
            return
        self._generation += 1
        dropped = len(self._cache)
        self._cache.clear()
        log.info("authz_cache_cleared", signer=name, dropped=dropped, policy_files=notice.files,
                 policy_errors=notice.errors)
