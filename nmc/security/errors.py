"""Why a message, certificate or key was refused.

The exception tree::

    SecurityError                 every refusal; field ``reason`` (one line)
    ├── CertificateError          missing, unparseable, foreign, expired or not yet valid certificate
    ├── PrivateKeyError           unparseable, encrypted or unsupported private key
    ├── SignatureError            missing, bad base64, or does not verify over the body
    ├── CallerMismatchError       ``caller`` is not ``cert=<certificate name>``
    ├── ClockSkewError            request time too far in the future or older than its ttl
    ├── ReplayError               request id already seen within its ttl window
    ├── StaleRequestError         issued before the node lost its memory of request ids
    └── ReplayCapacityError       no room to remember one more id (node full, or the caller's quota)

An NmcError (nmc.errors): ``str(error) == error.reason`` always, and the reason is a single line so a
node can log it and put it in a reply as is.
"""

from __future__ import annotations

import datetime

from nmc.errors import NmcError

__all__ = [
    "CallerMismatchError",
    "CertificateError",
    "ClockSkewError",
    "PrivateKeyError",
    "ReplayCapacityError",
    "ReplayError",
    "SecurityError",
    "SignatureError",
    "StaleRequestError",
]


class SecurityError(NmcError):
    """A message, certificate or key was refused; ``reason`` says why in one line.

    Reasons quote attacker-controlled text (names, ids): NmcError folds them onto one line,
    so a sender cannot forge extra lines in a log or a reply.
    """


class CertificateError(SecurityError):
    """The certificate is missing, unparseable, not from the fleet CA, or outside its validity period."""


class PrivateKeyError(SecurityError):
    """The private key cannot be loaded or used (unparseable, encrypted, unsupported type)."""


class SignatureError(SecurityError):
    """The signature is missing, is not base64, or does not verify over the body bytes."""


class CallerMismatchError(SecurityError):
    """The request's ``caller`` does not name the certificate that signed it."""

    def __init__(self, caller: str, name: str) -> None:
        self.caller = caller
        self.name = name
        super().__init__(f"caller {caller!r} does not match certificate {name!r}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.caller, self.name))


class ClockSkewError(SecurityError):
    """The request time is further than its ttl from now; ``offset`` = request time - now."""

    def __init__(self, reason: str, *, offset: float | None = None, ttl: float | None = None) -> None:
        self.offset = offset
        self.ttl = ttl
        super().__init__(reason)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_clock_skew, (self.reason, self.offset, self.ttl))


def _rebuild_clock_skew(reason: str, offset: float | None, ttl: float | None) -> ClockSkewError:
    return ClockSkewError(reason, offset=offset, ttl=ttl)


class ReplayError(SecurityError):
    """The request id was already seen within its ttl window."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"request id {request_id!r} was already seen")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.request_id,))


class StaleRequestError(SecurityError):
    """Issued at or before ``not_before``: the node lost its memory of ids then, so it may have run already."""

    def __init__(self, issued: float, not_before: float) -> None:
        self.issued = issued
        self.not_before = not_before
        super().__init__(f"request issued before this node started ({_iso(not_before)}) and the node lost its "
                         "record of the requests it ran: it may have run already; send it again")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.issued, self.not_before))


class ReplayCapacityError(SecurityError):
    """No room to remember one more request id: ``scope`` "node" (the whole cache) or "caller" (its quota)."""

    def __init__(self, scope: str, limit: int, caller: str) -> None:
        self.scope = scope
        self.limit = limit
        self.caller = caller
        if scope == "caller":
            reason = (f"{caller} already has {limit} unexpired requests remembered on this node, the most per "
                      "caller: refused until some expire (a node never forgets an unexpired one)")
        else:
            reason = (f"this node remembers {limit} unexpired requests, its capacity: refused until some "
                      "expire (a node never forgets an unexpired one)")
        super().__init__(reason)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.scope, self.limit, self.caller))


def _iso(when: float) -> str:
    try:
        stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
        return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{when!r}"
