"""Is a message on NMC_AUDIT a genuine record of the node it names? Bytes and headers in, a record or a reason out.

The broker lets a node publish on its own audit subject only, but whatever a
node publishes there is its own word. A record is written as genuine only when
all of this holds:

1. it decodes as an `nmc.audit.v2` record (nmc.audit.records; v1 was unsigned);
2. its `Nmc-Signature` verifies over the exact body with the `Nmc-Certificate`
   against the fleet CA, the CRL and the name patterns (nmc.security.Verifier),
   with the certificate valid when the broker stored the message;
3. the certificate is a node's: it carries the role `node`, or carries no role
   at all and its name matches `node_names` (a Puppet CA's certificates have
   no roles; the broker maps them with `--role-pattern node=GLOB` likewise);
4. record `identity` == certificate name == the identity token of the subject
   `nmc.audit.<collective>.<identity>`, and the collective token == the
   record's `collective`.

The record's id (`record_msg_id`) then names a node that signed it, so the
audit service's de-duplication cannot be steered by another node either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nmc.audit.errors import AuditRecordRefused
from nmc.audit.records import decode_record
from nmc.protocol.audit import AUDIT_PROTOCOL
from nmc.protocol.subjects import SubjectError, parse_audit_subject
from nmc.security import SecurityError, Verifier
from nmc.security.signers import RoleError, SignerCheck

__all__ = ["NODE_ROLE", "RecordVerifier"]

NODE_ROLE = "node"


class RecordVerifier:
    """Checks audit records against the fleet CA (see the module doc); one per audit service or reader."""

    def __init__(self, verifier: Verifier, *, node_names: Iterable[str] = ()) -> None:
        self.verifier = verifier
        self.node_names = tuple(node_names)
        if any(not pattern.strip() for pattern in self.node_names):
            raise ValueError("audit.node_names: empty pattern")
        # The signature and role check, shared with lifecycle events (nmc.security.events).
        self.signers = SignerCheck(verifier, role_names={NODE_ROLE: self.node_names},
                                   hints={NODE_ROLE: "see audit.node_names"})

    def check(self, subject: str, body: bytes, headers: Mapping[str, str] | None, *,
              now: float | None = None) -> dict[str, Any]:
        """The decoded genuine record; AuditRecordError (not a record) or AuditRecordRefused (not genuine).

        `now`: the time the certificate must have been valid at (the broker's
        storage time of the message), default the present.
        """
        record = decode_record(body)
        if record["protocol"] != AUDIT_PROTOCOL:
            raise AuditRecordRefused(f"unsigned {record['protocol']} record (made by a node older than "
                                     f"{AUDIT_PROTOCOL}, or forged)", record)
        try:
            name = self.signers.signer(body, headers, NODE_ROLE, now=now)
        except RoleError as exc:
            raise AuditRecordRefused(exc.reason, record) from None
        except SecurityError as exc:
            raise AuditRecordRefused(f"signature: {exc.reason}", record) from None
        if record["identity"] != name:
            raise AuditRecordRefused(f"record claims node {record['identity']!r} but is signed by {name!r}", record)
        try:
            collective, identity = parse_audit_subject(subject)
        except SubjectError as exc:
            raise AuditRecordRefused(exc.reason, record) from None
        if identity != name:
            raise AuditRecordRefused(f"record of {name!r} on the audit subject of {identity!r}", record)
        if collective != record["collective"]:
            raise AuditRecordRefused(f"record of collective {record['collective']!r} on the audit subject of "
                                     f"collective {collective!r}", record)
        return record
