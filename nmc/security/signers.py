"""Who signed a message, and does that certificate hold the role the message needs? Bytes and headers in, a name out.

Shared by every reader of signed records that one role publishes on subjects
that name the publisher: audit records (nmc.audit.verify: role `node`) and
lifecycle events (nmc.security.events: `node`, `policy` or `audit`). The
caller then checks that the name is the one the message and its subject claim.

A certificate holds a role when its subject carries it (``OU``), or when it
carries no role at all and its name matches one of the patterns given for the
role (a Puppet CA's certificates have no roles; the broker maps them with
``--role-pattern node=GLOB`` likewise).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from cryptography import x509

from nmc.security.ca import certificate_roles
from nmc.security.errors import SecurityError
from nmc.security.signing import CERTIFICATE_HEADER, SIGNATURE_HEADER, Verifier

__all__ = ["RoleError", "SignerCheck"]

_ROLE_CACHE = 1024


class RoleError(SecurityError):
    """The signature verifies, but the certificate does not hold the role the message needs."""


class SignerCheck:
    """Verifies a signed body (nmc.security.Verifier) and the role of its signer; one per reader.

    `role_names`: for each role, the name patterns of certificates without any role that count
    as holding it; `hints`: for each role, what to add to a refusal of a certificate without roles
    (e.g. the setting that holds the patterns).
    """

    def __init__(self, verifier: Verifier, *, role_names: Mapping[str, Iterable[str]] | None = None,
                 hints: Mapping[str, str] | None = None) -> None:
        self.verifier = verifier
        self.role_names = {role: tuple(patterns) for role, patterns in (role_names or {}).items()}
        self.hints = dict(hints or {})
        self._roles: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    def signer(self, body: bytes, headers: Mapping[str, str] | None, role: str, *, now: float | None = None) -> str:
        """The name of the certificate that signed `body` with role `role`.

        SecurityError from the Verifier (no or bad signature, foreign, expired or revoked
        certificate), RoleError when the certificate does not hold `role`.
        """
        headers = headers or {}
        certificate = headers.get(CERTIFICATE_HEADER)
        name = self.verifier.verify(body, headers.get(SIGNATURE_HEADER), certificate, now=now)
        assert certificate is not None  # verify() refuses a message without it
        roles = self.roles(certificate)
        if role in roles:
            return name
        if not roles and any(fnmatch.fnmatchcase(name, p) for p in self.role_names.get(role, ())):
            return name
        hint = self.hints.get(role)
        held = ", ".join(roles) if roles else f"no role{f' ({hint})' if hint else ''}"
        raise RoleError(f"signed by {name!r}, which is not a{'n' if role[:1] in 'aeiou' else ''} {role}: it has {held}")

    def roles(self, certificate_b64: str) -> tuple[str, ...]:
        """The roles of a certificate verify() just accepted (so it parses); remembered for the next messages."""
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
