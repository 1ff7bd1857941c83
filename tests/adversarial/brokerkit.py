"""Raw broker probes for the adversarial tests: JetStream API requests, refusals, stream and registry state.

A refused publish never gets an answer: nats-server only sends the publisher an
asynchronous ``-ERR 'Permissions Violation for Publish to "..."'``, which nats-py hands
to ``error_cb`` (``HostileFleet.connect_as(errors=...)``) in lower case. `published`
knows after one round trip whether the broker took a publish, so no test waits out a
timeout to learn that something was refused.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from nmc.transport.compat import synced_flush
from nmc.protocol.registry import RegistryEntry, registry_key
from tests.adversarial.kit import until

__all__ = ["REFUSED", "js_api", "published", "refused", "registry_entry", "respond_refused", "stream_info"]

REFUSED = None  # what js_api returns for a request the broker refused to take


def refused(errors: list[str], subject: str, since: int = 0) -> bool:
    """Whether the broker reported a publish permission violation for `subject` (in `errors[since:]`)."""
    wanted = f'permissions violation for publish to "{subject.lower()}"'
    return any(wanted in e for e in errors[since:])


async def js_api(nc: NATS, subject: str, payload: Any = b"", *, errors: list[str],
                 headers: dict[str, str] | None = None, within: float = 5.0) -> dict[str, Any] | None:
    """One JetStream request (an API call, or a publish into a stream): the decoded answer, or REFUSED."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    answers: list[Msg] = []

    async def keep(msg: Msg) -> None:
        answers.append(msg)

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=keep)
    try:
        if not await published(nc, subject, body, errors, reply=inbox, headers=headers):
            return REFUSED
        await until(lambda: bool(answers), within, f"an answer to {subject}")
    finally:
        await sub.unsubscribe()
    return json.loads(answers[0].data) if answers else REFUSED


async def published(nc: NATS, subject: str, body: bytes, errors: list[str], *, reply: str = "",
                    headers: dict[str, str] | None = None) -> bool:
    """Publish once; True if the broker took it, False if it refused it (no waiting out a timeout).

    nats-server checks a publish before it reads the PING behind it and queues the -ERR
    before the PONG; nats-py hands the -ERR to error_cb while reading, before the PONG
    completes the flush. So after `synced_flush` a refusal is in `errors` or there is none.
    """
    since = len(errors)
    await nc.publish(subject, body, reply=reply, headers=headers)
    await synced_flush(nc)
    return not refused(errors, subject, since)


async def respond_refused(nc: NATS, msg: Msg, body: bytes, errors: list[str]) -> bool:
    """Answer `msg` on its reply subject; True if the broker refused the answer."""
    return not await published(nc, msg.reply, body, errors)


async def stream_info(nc: NATS, stream: str, errors: list[str]) -> dict[str, Any]:
    """The stream's info as a user sees it (fails the test if the request is refused)."""
    info = await js_api(nc, f"$JS.API.STREAM.INFO.{stream}", errors=errors)
    assert info is not None and "error" not in info, f"STREAM.INFO.{stream}: {info}"
    return info


async def registry_entry(nc: NATS, identity: str, errors: list[str], bucket: str = "nmc_registry") -> RegistryEntry:
    """The registry record stored under `identity`'s key (RecordError if what is there is not its record)."""
    answer = await js_api(nc, f"$JS.API.STREAM.MSG.GET.KV_{bucket}",
                          {"last_by_subj": f"$KV.{bucket}.{registry_key('nmc', identity)}"}, errors=errors)
    assert answer is not None and "message" in answer, f"no registry record for {identity}: {answer}"
    return RegistryEntry.from_bytes(base64.b64decode(answer["message"].get("data") or b""))
