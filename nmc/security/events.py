"""Is a message on `nmc.events.>` a genuine event of whoever it names? Subject, bytes and headers in, an event out.

The broker lets a node publish events under its own identity only, the
policy and audit services under their own names; a user may publish none.
Whatever arrives is still only shown as genuine when all of this holds
(docs/events.md, "Signing and verification"):

1. it decodes as a CloudEvents 1.0 event of a kind this version knows
   (nmc.protocol.events.decode_event);
2. its `Nmc-Signature` verifies over the exact body with the `Nmc-Certificate`
   against the fleet CA, the CRL and the name patterns (nmc.security.Verifier);
3. the certificate holds the role of the event's kind (`node` for node events,
   `policy`, `audit`), or no role and a name matching that role's patterns
   (nmc.security.signers.SignerCheck, shared with audit records);
4. the identity of the event's `source` == certificate name == the identity token
   of the subject, and the subject's collective and kind tokens are the event's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from nmc.errors import NmcError
from nmc.protocol.events import CloudEvent, decode_event
from nmc.protocol.subjects import SubjectError, parse_event_subject
from nmc.security.errors import SecurityError
from nmc.security.signers import RoleError, SignerCheck
from nmc.security.signing import Verifier

__all__ = ["EventRefused", "EventVerifier"]


class EventRefused(SecurityError):
    """Not a genuine event of whoever it names; `event` is what it claimed to be, when it decoded."""

    def __init__(self, reason: str, event: CloudEvent | None = None) -> None:
        super().__init__(reason)
        self.event = event


class EventVerifier:
    """Checks lifecycle events (see the module doc); one per reader (`nmc events`, the audit service)."""

    def __init__(self, verifier: Verifier, *, role_names: Mapping[str, Iterable[str]] | None = None,
                 hints: Mapping[str, str] | None = None) -> None:
        self.signers = SignerCheck(verifier, role_names=role_names, hints=hints)

    def check(self, subject: str, body: bytes, headers: Mapping[str, str] | None, *,
              now: float | None = None) -> CloudEvent:
        """The genuine event; EventRefused (with the reason, and the event if it decoded) otherwise."""
        try:
            event = decode_event(body)
        except NmcError as exc:
            raise EventRefused(f"not an event: {exc.reason}") from None
        try:
            name = self.signers.signer(body, headers, event.role, now=now)
        except RoleError as exc:
            raise EventRefused(exc.reason, event) from None
        except SecurityError as exc:
            raise EventRefused(f"signature: {exc.reason}", event) from None
        if event.identity != name:
            raise EventRefused(f"event claims {event.identity!r} but is signed by {name!r}", event)
        try:
            collective, kind, identity = parse_event_subject(subject)
        except SubjectError as exc:
            raise EventRefused(exc.reason, event) from None
        if identity != name:
            raise EventRefused(f"event of {name!r} on the event subject of {identity!r}", event)
        if (collective, kind) != (event.collective, event.kind):
            raise EventRefused(f"{event.kind} event of collective {event.collective!r} on the subject of a "
                               f"{kind} event of collective {collective!r}", event)
        return event
