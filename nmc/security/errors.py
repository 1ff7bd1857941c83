"""Why a message, certificate or key was refused.

The exception tree::

    SecurityError                 every refusal; field ``reason`` (one line)
    ├── CertificateError          missing, unparseable, foreign, expired or not yet valid certificate
    ├── PrivateKeyError           unparseable, encrypted or unsupported private key
    ├── SignatureError            missing, bad base64, or does not verify over the body
    ├── CallerMismatchError       ``caller`` is not ``cert=<certificate name>``
    ├── ClockSkewError            request time too far in the future or older than its ttl
    └── ReplayError               request id already seen within its ttl window

``str(error) == error.reason`` always, and the reason is a single line so a
node can log it and put it in a reply as is.
"""

from __future__ import annotations

__all__ = [
    "CallerMismatchError",
    "CertificateError",
    "ClockSkewError",
    "PrivateKeyError",
    "ReplayError",
    "SecurityError",
    "SignatureError",
]


def _one_line(text: str) -> str:
    # Reasons can quote attacker-controlled text (names, ids); a newline in a
    # log line or reply message would let a sender forge extra lines.
    return " ".join(text.splitlines())


class SecurityError(Exception):
    """A message, certificate or key was refused; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        self.reason = _one_line(reason)
        super().__init__(self.reason)

    def __str__(self) -> str:
        return self.reason


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
