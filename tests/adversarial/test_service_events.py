"""Issue 17: the services' events on a secure fleet (TLS broker with nmc's generated permissions, real daemons).

- the policy service's `policy_reloaded` and the nodes' `startup` reach the audit
  service (audit.events = true), which writes them to its file next to the records,
  verified with the configuration's own event verifier;
- an event the compromised node9 publishes on its own subject while claiming
  another identity is refused by the audit service and never written;
- the audit service itself may publish its `audit_backlog` on its own subject only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nmc.protocol.events import CloudEvent
from nmc.protocol.subjects import event_subject
from tests.adversarial.kit import HostileFleet, until

ATTACKER = "node9.example.net"


def _events(fleet: HostileFleet) -> list[dict[str, Any]]:
    return [line for line in fleet.audit_records() if line.get("kind") == "event"]


async def test_audit_service_writes_the_fleets_verified_events(tmp_path: Path):
    fleet = HostileFleet(tmp_path / "fleet")
    with fleet.layout.audit_cfg.open("a", encoding="utf-8") as out:
        out.write("audit.events = true\n")
    try:
        await fleet.start()
        assert fleet.audit is not None and fleet.audit.signer is not None
        assert fleet.audit.signer.name == "nmc-audit"

        def seen() -> bool:
            got = {(e["type"], e["identity"]) for e in _events(fleet)}
            return {("io.nmc.policy.reloaded.v1", "nmc-policy"),
                    *(("io.nmc.node.startup.v1", name) for name in fleet.identities)} <= got

        await until(seen, 20, "the policy service's and every node's events in the audit file")
        reloaded = next(e for e in _events(fleet) if e["type"] == "io.nmc.policy.reloaded.v1")
        assert reloaded["event"]["source"] == "/nmc/nmc/policy/nmc-policy"
        assert reloaded["event"]["data"]["reason"] == "start" and reloaded["event"]["data"]["errors"] == []

        # node9's own subject, but an event claiming node1: the broker lets it through, the audit service does not.
        errors: list[str] = []
        nc = await fleet.connect_as(ATTACKER, errors=errors)
        claim = CloudEvent(kind="shutdown", collective="nmc", identity=fleet.identities[0],
                           data={"reason": "forged", "uptime_s": 1}, time=1764072000.0)
        body = claim.to_bytes()
        await nc.publish(event_subject("nmc", "shutdown", ATTACKER), body, headers=fleet.signer(ATTACKER).headers(body))
        await nc.flush()
        audit = fleet.audit
        await until(lambda: audit.counters.events_refused >= 1, 10, "the forged event to be refused")
        assert errors == []
        assert not any(e["event"]["data"].get("reason") == "forged" for e in _events(fleet))

        # The audit service's own event subject is open to it, another's is not.
        as_audit: list[str] = []
        service = await fleet.connect_as("nmc-audit", errors=as_audit)
        backlog = CloudEvent(kind="audit_backlog", collective="nmc", identity="nmc-audit", time=1764072000.0,
                             data={"pending": 1, "threshold": 1, "above": True, "position": 1})
        body = backlog.to_bytes()
        await service.publish(event_subject("nmc", "audit_backlog", "nmc-audit"), body,
                              headers=fleet.signer("nmc-audit").headers(body))
        await service.publish(event_subject("nmc", "audit_backlog", "nmc-policy"), body,
                              headers=fleet.signer("nmc-audit").headers(body))
        await service.flush()
        await until(lambda: any("permissions violation" in e.lower() for e in as_audit), 10,
                    "the broker to refuse the audit service another's event subject")
        await until(lambda: any(e["type"] == "io.nmc.audit.backlog.v1" for e in _events(fleet)), 10,
                    "the audit service's own event in its file")
        assert len([e for e in _events(fleet) if e["type"] == "io.nmc.audit.backlog.v1"]) == 1
    finally:
        await fleet.stop()
