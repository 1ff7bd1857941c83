"""A node's half of jobs (nmc.protocol.jobs): store the signed reply of a job request in NMC_JOBS.

The reply has already gone to the caller when this runs, so nothing here may
hold up the request path: each stored reply is published with a reply subject
in the node's own inbox and its acknowledgement is read by one shared
subscription, never awaited. A refusal or "no responders" (no NMC_JOBS stream)
is logged, once per outage, and the reply is not stored: jobs are a record for
people, the audit trail is the record nothing may lose (docs/jobs.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from nmc.protocol.envelope import Request
from nmc.protocol.jobs import job_subject

__all__ = ["JobKeeper"]

log = structlog.get_logger("nmc.node")


class JobKeeper:
    """Publishes a job's signed replies for one node; counts what the stream acknowledged and refused."""

    def __init__(self, connection: Callable[[], Any], collective: str, identity: str) -> None:
        self._connection = connection  # the node's current NATS connection (None before start)
        self.collective, self.identity = collective, identity
        self._acks: Any = None  # the subscription to the acknowledgements, made on first use
        self._prefix = ""
        self._failing = False  # the last acknowledgement said "not stored" (warn once per outage)
        self.stored = 0
        self.refused = 0
        self._log = log.bind(identity=identity)

    async def keep(self, request: Request, body: bytes, headers: Mapping[str, str]) -> None:
        """Publish the reply to its job subject; the acknowledgement is handled when it comes."""
        nc = self._connection()
        if nc is None or request.job is None or not request.caller.startswith("cert="):
            return
        if self._acks is None:
            self._prefix = nc.new_inbox()
            self._acks = await nc.subscribe(f"{self._prefix}.*", cb=self._on_ack)
        subject = job_subject(self.collective, request.caller[len("cert="):], request.job, "reply", self.identity)
        await nc.publish(subject, body, reply=f"{self._prefix}.{request.job}", headers=dict(headers))

    async def _on_ack(self, msg: Any) -> None:
        status = (msg.headers or {}).get("Status")
        error = f"status {status} (no NMC_JOBS stream?)" if status else None
        if error is None:
            try:
                answer = json.loads(msg.data)
            except ValueError:
                answer = {"error": {"description": "not a JetStream acknowledgement"}}
            failure = answer.get("error") if isinstance(answer, dict) else {"description": "not an object"}
            if failure:
                error = str(failure.get("description") if isinstance(failure, dict) else failure)
        if error is None:
            self.stored += 1
            if self._failing:
                self._log.info("job_replies_stored_again")
            self._failing = False
            return
        self.refused += 1
        level = self._log.debug if self._failing else self._log.warning
        self._failing = True
        level("job_reply_not_stored", job=msg.subject.rsplit(".", 1)[-1], error=error,
              hint="is the NMC_JOBS stream set up (nmc ops setup)?")
