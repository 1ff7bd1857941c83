"""Issue 17: a certificate buys no more lifecycle events than its role allows.

- the broker refuses a node's event under another node's identity, or in another
  collective, and any event from a user;
- what a node (or a service) may publish, it publishes under its own name only:
  an event there claiming another identity, unsigned, or of a kind its role does
  not publish is refused by the reader `nmc events watch` uses, never shown as genuine;
- the real nodes' events still come through, verified.
"""

from __future__ import annotations

import asyncio
import contextlib

from nmc.client.events import SeenEvent, watch_events
from nmc.ops.config.settings import event_verifier
from nmc.protocol.events import CloudEvent
from nmc.protocol.subjects import event_subject
from tests.adversarial.kit import HostileFleet, until

ATTACKER = "node9.example.net"
VICTIM = "node1.example.net"
STARTUP = {"version": "x", "agents": [], "classes": [], "facts": {"role": "forged"}, "facts_version": 0}


def startup(identity: str, collective: str = "nmc") -> CloudEvent:
    return CloudEvent(kind="startup", collective=collective, identity=identity, data=STARTUP, time=1764072000.0)


async def test_the_broker_refuses_events_under_another_identity(hostile: HostileFleet):
    for name, subject in ((ATTACKER, event_subject("nmc", "startup", VICTIM)),
                          (ATTACKER, event_subject("other", "startup", ATTACKER)),
                          ("mallory", event_subject("nmc", "startup", "mallory")),
                          ("nmc-policy", event_subject("nmc", "startup", VICTIM))):
        errors: list[str] = []
        nc = await hostile.connect_as(name, errors=errors)
        body = startup(VICTIM).to_bytes()
        await nc.publish(subject, body, headers=hostile.signer(name).headers(body))
        await nc.flush()
        await until(lambda: errors, 5, f"the broker to refuse {name} publishing {subject}")
        assert "permissions violation for publish" in errors[0].lower(), errors


async def test_forged_events_are_never_shown_as_genuine(hostile: HostileFleet):
    verifier = event_verifier(hostile.client_config("admin"))
    watcher = await hostile.connect_as("admin")
    shown: list[SeenEvent] = []
    refused: list[SeenEvent] = []
    ready = asyncio.Event()

    async def watch() -> None:
        async for seen in watch_events(watcher, verifier, collective="nmc", on_refused=refused.append,
                                       on_ready=lambda _subject: ready.set()):
            shown.append(seen)

    task = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        errors: list[str] = []
        attacker = await hostile.connect_as(ATTACKER, errors=errors)
        own = event_subject("nmc", "startup", ATTACKER)  # the subject the broker lets node9 use
        claim = startup(VICTIM).to_bytes()
        await attacker.publish(own, claim, headers=hostile.signer(ATTACKER).headers(claim))  # claims node1
        mine = startup(ATTACKER).to_bytes()
        await attacker.publish(own, mine)  # unsigned
        await attacker.publish(own, mine, headers=hostile.signer("admin").headers(mine))  # a user's signature
        # The policy service may publish under its own name, but not a node's kind of event.
        policy = await hostile.connect_as("nmc-policy", errors=errors)
        as_policy = startup("nmc-policy").to_bytes()
        await policy.publish(event_subject("nmc", "startup", "nmc-policy"), as_policy,
                             headers=hostile.signer("nmc-policy").headers(as_policy))
        await attacker.flush()
        await policy.flush()
        await until(lambda: len(refused) >= 4, 10, "the reader to refuse the four forgeries")
        assert errors == []  # the broker let each through: only the signature checks stand in the way
        reasons = [seen.refused or "" for seen in refused]
        assert any(f"claims {VICTIM!r} but is signed by {ATTACKER!r}" in r for r in reasons), reasons
        assert any("missing Nmc-Signature header" in r for r in reasons), reasons
        assert any("'admin', which is not a node" in r for r in reasons), reasons
        assert any("'nmc-policy', which is not a node" in r for r in reasons), reasons
        assert not any(seen.event is not None and seen.event.data.get("facts") == {"role": "forged"} for seen in shown)

        # A real node's events come through, verified.
        await hostile.restart_node(hostile.identities[1])
        await until(lambda: any(s.event is not None and s.event.kind == "startup"
                                and s.event.identity == hostile.identities[1] for s in shown), 15,
                    "the restarted node's startup event")
        kinds = {(s.event.kind, s.event.identity) for s in shown if s.event is not None}
        assert ("shutdown", hostile.identities[1]) in kinds
        assert all(s.verified for s in shown)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
