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

import base64
import binascii
import fnmatch
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography import x509

from nmc.audit.errors import AuditRecordRefused
from nmc.audit.records import decode_record
from nmc.protocol.audit import AUDIT_PROTOCOL
from nmc.protocol.subjects import SubjectError, parse_audit_subject
from nmc.security import CERTIFICATE_HEADER, SIGNATURE_HEADER, SecurityError, Verifier, certificate_roles

__all__ = ["NODE_ROLE", "RecordVerifier"]

NODE_ROLE = "node"
_ROLE_CACHE = 1024


class RecordVerifier:
    """Checks audit records against the fleet CA (see the module doc); one per audit service or reader."""

    def __init__(self, verifier: Verifier, *, node_names: Iterable[str] = ()) -> None:
        self.verifier = verifier
        self.node_names = tuple(node_names)
        if any(not pattern.strip() for pattern in self.node_names):
            raise ValueError("audit.node_names: empty pattern")
        self._roles: OrderedDict[str, tuple[str, ...]] = OrderedDict()

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
        headers = headers or {}
        certificate = headers.get(CERTIFICATE_HEADER)
        try:
            name = self.verifier.verify(body, headers.get(SIGNATURE_HEADER), certificate, now=now)
        except SecurityError as exc:
            raise AuditRecordRefused(f"signature: {exc.reason}", record) from None
        assert certificate is not None  # verify() refuses a message without it
        roles = self._certificate_roles(certificate)
        if NODE_ROLE not in roles and (roles or not any(fnmatch.fnmatchcase(name, p) for p in self.node_names)):
            held = ", ".join(roles) if roles else "no role (see audit.node_names)"
            raise AuditRecordRefused(f"signed by {name!r}, which is not a node: it has {held}", record)
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

    def _certificate_roles(self, certificate_b64: str) -> tuple[str, ...]:
        """The roles of a certificate verify() just accepted (so it parses); remembered for the next records."""
        roles = self._roles.get(certificate_b64)
        if roles is None:
            try:
                roles = certificate_roles(x509.load_der_x509_certificate(base64.b64decode(certificate_b64)))
            except (binascii.Error, ValueError):
                roles = ()
            self._roles[certificate_b64] = roles
            if len(self._roles) > _ROLE_CACHE:
                self._roles.popitem(last=False)
        else:
            self._roles.move_to_end(certificate_b64)
        return roles
