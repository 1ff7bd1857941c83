"""What a certificate's name means outside the signature: its broker user, its inbox, its allowed shapes.

Three rules live here because the client, the node and the broker
configuration must agree on them:

- ``nats_user(cert)``: the NATS user nats-server's ``verify_and_map`` maps a
  client certificate to (an email SAN, else a DNS SAN, else the RFC 4514
  subject), so a rendered broker configuration names the same user;
- ``inbox_prefix(name)``: ``_INBOX.<encoded name>``, the only subjects a
  connection may subscribe to for replies, so one user cannot read another's;
- ``NamePolicy``: fnmatch patterns a certificate's name must match for each
  role (subject ``OU``) it carries (``user = *.users``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from cryptography import x509

from nmc.protocol.subjects import encode_token
from nmc.security.errors import CertificateError

__all__ = ["INBOX_ROOT", "NamePolicy", "in_inbox_of", "inbox_prefix", "nats_user", "tls_identity", "with_tls_identity"]

INBOX_ROOT = "_INBOX"
_TLS_NAME = "nmc_certificate_name"
T = TypeVar("T")


def inbox_prefix(name: str) -> str:
    """The reply-inbox prefix of the connection whose certificate is named ``name``: ``_INBOX.<token>``."""
    return f"{INBOX_ROOT}.{encode_token(name)}"


def in_inbox_of(reply: str, name: str | None) -> bool:
    """Whether `reply` lies in the reply inbox of certificate `name` (any `_INBOX.` one when None).

    Daemons answer only there: a reply subject is chosen by whoever sends the request,
    and without this check a node would publish its answer wherever a caller pointed it
    (another node's registry key, an audit subject): a confused deputy.
    """
    prefix = inbox_prefix(name) if name is not None else INBOX_ROOT
    return reply.startswith(prefix + ".") and len(reply) > len(prefix) + 1


def with_tls_identity(context: T, name: str) -> T:
    """Mark an SSL context with the name of the client certificate loaded into it; returns it."""
    setattr(context, _TLS_NAME, name)
    return context


def tls_identity(context: object) -> str | None:
    """The certificate name ``with_tls_identity`` put on a context (the broker's user: its inbox), or None."""
    name = getattr(context, _TLS_NAME, None)
    return name if isinstance(name, str) else None


def nats_user(cert: x509.Certificate) -> str:
    """The user name nats-server's ``verify_and_map`` maps ``cert`` to.

    nats-server tries every email SAN, then every DNS SAN, then the subject,
    and takes the first that names a configured user. A broker configuration
    renders one user per certificate, under the first name it would try.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for kind in (x509.RFC822Name, x509.DNSName):
            values = san.get_values_for_type(kind)
            if values:
                return str(values[0])
    # nats-server matches a DN-shaped user name by DN equality, so the RFC 4514
    # spelling is enough even where Go would order or escape it differently.
    return cert.subject.rfc4514_string()


def _patterns(text: str | Iterable[str]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(p.strip() for p in items if p.strip())


@dataclass(frozen=True)
class NamePolicy:
    """Allowed certificate-name patterns (fnmatch, case-sensitive) per role; roles without patterns are free."""

    patterns: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Normalise to a read-only mapping of non-empty pattern tuples."""
        cleaned: dict[str, tuple[str, ...]] = {}
        for role, value in self.patterns.items():
            if not role:
                raise ValueError("a role in the name policy must not be empty")
            found = _patterns(value)
            if not found:
                raise ValueError(f"role {role!r} has no name patterns (leave it out to allow any name)")
            cleaned[role] = found
        object.__setattr__(self, "patterns", MappingProxyType(cleaned))

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> NamePolicy:
        """From ``{role: "pattern, pattern"}`` (``plugin.security.allowed_names.<role>``); empty values are skipped."""
        return cls({role: text for role, text in settings.items() if _patterns(text)})

    def __bool__(self) -> bool:
        """Whether any role is restricted."""
        return bool(self.patterns)

    def violation(self, name: str, roles: Iterable[str]) -> str | None:
        """Why ``name`` may not hold one of ``roles``, or None when every restricted role allows it."""
        for role in roles:
            allowed = _patterns(self.patterns.get(role, ()))
            if allowed and not any(fnmatch.fnmatchcase(name, p) for p in allowed):
                return (f"certificate name {name!r} is not allowed for role {role!r}"
                        f" (allowed: {', '.join(allowed)})")
        return None

    def check(self, name: str, roles: Iterable[str]) -> None:
        """Raise CertificateError when ``violation`` finds one."""
        reason = self.violation(name, roles)
        if reason is not None:
            raise CertificateError(reason)
