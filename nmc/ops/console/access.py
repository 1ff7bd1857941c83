"""Client-certificate access to the web console served with TLS (issue 18: "or client-certificate authentication").

`nmc serve console --tls-cert FILE --tls-key FILE` serves HTTPS (TLS 1.2 at least) and asks
every browser for a certificate of the fleet CA (`plugin.security.ca_file`). A request is
admitted by either

- a client certificate that chains to the fleet CA, is valid now, is not revoked (the CRL
  nmc follows everywhere), belongs to a person, role `user` or `auditor`, and to none of the
  daemons' roles, and is on `--allow-cert` when that list is given; or
- the access token, as without TLS (unless `--no-token`).

Without either, every page and API call is refused with no data. A certificate the fleet CA
did not issue, or an expired one, fails the TLS handshake itself. A node's, the policy or
audit service's or the console's own certificate is refused: a compromised node must not
read the whole fleet's pages with the key it already holds.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from nmc.errors import NmcError, reason_of
from nmc.security import SecurityError, Verifier
from nmc.security.ca import certificate_roles
from nmc.security.permissions import AUDITOR_ROLE, USER_ROLE

__all__ = ["DAEMON_ROLES", "PERSON_ROLES", "AccessRefused", "ClientCertificates", "allow_list", "server_context"]

PERSON_ROLES = frozenset({USER_ROLE, AUDITOR_ROLE})
# Roles of daemons and servers: a certificate holding any of them is a machine's, whatever else it holds.
DAEMON_ROLES = frozenset({"node", "policy", "audit", "console", "service", "leaf", "broker", "operator"})


class AccessRefused(NmcError):
    """A client certificate the console does not admit; the message says why (shown to the browser, no data)."""


@dataclass(frozen=True)
class ClientCertificates:
    """Which client certificates the console admits: see the module doc."""

    verifier: Verifier  # the fleet CA, its CRL and name policy (load_verifier of the console's config)
    allow: frozenset[str] = frozenset()  # certificate names; empty: every person's certificate

    def admit(self, der: bytes) -> str:
        """The certificate's name if it is admitted; AccessRefused saying why not."""
        try:
            name = self.verifier.check_certificate(der)
        except SecurityError as exc:
            raise AccessRefused(f"client certificate refused: {reason_of(exc)}") from exc
        roles = certificate_roles(x509.load_der_x509_certificate(der))
        machine = sorted(DAEMON_ROLES.intersection(roles))
        if machine or not PERSON_ROLES.intersection(roles):
            raise AccessRefused(f"client certificate {name!r} (roles {', '.join(roles) or 'none'}) is not a "
                                f"person's: the console admits roles {' or '.join(sorted(PERSON_ROLES))} only")
        if self.allow and name not in self.allow:
            raise AccessRefused(f"client certificate {name!r} is not on this console's allow list (--allow-cert)")
        return name


def server_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """HTTPS with the console's server certificate; asks for (does not demand) a client certificate of `client_ca`.

    CERT_OPTIONAL: a browser without a certificate still completes the handshake so that the
    token can admit it (and everything else answers 401); a certificate it does present must
    verify (chain, dates) or the handshake fails. TLS 1.2 at least.
    """
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise NmcError(f"console TLS: {reason_of(exc)} (certificate {cert}, key {key}, client CA {client_ca})") \
            from exc
    return ctx


def allow_list(names: Iterable[str]) -> frozenset[str]:
    """Certificate names from options and config (comma-separated entries allowed), blanks dropped."""
    return frozenset(n.strip() for entry in names for n in entry.split(",") if n.strip())
