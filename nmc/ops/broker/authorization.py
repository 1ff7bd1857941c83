"""The broker's half of the security model: one NATS user per certificate, permissions by role.

nats-server's ``verify_and_map`` makes the client certificate's name the NATS
user (``nmc.security.names.nats_user``); each user gets the union of the
permissions of the roles its certificate carries (subject ``OU``), as
``nmc.security.permissions`` defines them (user, node, policy, audit,
operator, leaf). This module decides which certificates become users and
renders them: everything else is denied. ``pinned_certs`` lists the public
keys of the certificates admitted (issued, not revoked, not expired), so a
revoked certificate is refused at the TLS handshake even when a newer
certificate of the same name is still admitted.

Planning and ``render_authorization`` are pure; ``secure_broker_settings`` is
the one function that reads (and, for the broker's own certificate, writes) files.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from nmc.authz.files import load_policy_dir
from nmc.authz.jobread import JobPolicyError, job_read_grants
from nmc.authz.policyset import PolicySet
from nmc.ops import pki
from nmc.ops.broker.server import BrokerError, BrokerSettings
from nmc.security import (
    SecurityError,
    certificate_name,
    certificate_roles,
    load_certificates_pem,
)
from nmc.security.crl import RevocationList, Revocations, ca_fingerprint
from nmc.security.names import nats_user
from nmc.security.permissions import (
    AUDIT_STREAM,
    BROKER_ROLE,
    LEAF_ROLE,
    OPERATOR_ROLE,
    ROLE_PERMISSIONS,
    USER_ROLE,
    Permissions,
    Scope,
    audit_permissions,
    leaf_permissions,
    job_reader_permissions,
    node_permissions,
    operator_permissions,
    policy_permissions,
    user_permissions,
)

__all__ = [
    "AUDIT_STREAM",
    "BROKER_ROLE",
    "LEAF_ROLE",
    "OPERATOR_ROLE",
    "ROLE_PERMISSIONS",
    "Authorization",
    "BrokerUser",
    "Permissions",
    "Scope",
    "Skipped",
    "TrustSources",
    "audit_permissions",
    "leaf_permissions",
    "node_permissions",
    "operator_permissions",
    "plan_users",
    "policy_permissions",
    "render_authorization",
    "secure_broker_settings",
    "spki_pin",
    "user_permissions",
]

def spki_pin(cert: x509.Certificate) -> str:
    """The certificate's ``pinned_certs`` entry: hex SHA-256 of its DER SubjectPublicKeyInfo."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize().hex()


@dataclass(frozen=True)
class BrokerUser:
    """One NATS user: what the server maps the certificate(s) to, their name, roles, keys and permissions."""

    user: str
    name: str
    roles: tuple[str, ...]
    pins: tuple[str, ...]
    permissions: Permissions


@dataclass(frozen=True)
class Skipped:
    """A certificate left out of the configuration, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Authorization:
    """The users to render and the certificates left out."""

    users: tuple[BrokerUser, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    brokers: tuple[tuple[str, str], ...] = ()  # (name, pin) of admitted broker certificates: route peers

    def role_pins(self, role: str) -> tuple[str, ...]:
        """The admitted keys of users with `role` (e.g. the leaf servers a hub accepts), sorted."""
        return tuple(sorted({pin for user in self.users if role in user.roles for pin in user.pins}))

    def broker_pins(self, names: Iterable[str]) -> tuple[str, ...]:
        """The admitted keys of the broker certificates named `names` (a cluster's members), sorted."""
        wanted = set(names)
        return tuple(sorted({pin for name, pin in self.brokers if name in wanted}))

    @property
    def pins(self) -> tuple[str, ...]:
        """Every admitted public key, sorted."""
        return tuple(sorted({pin for user in self.users for pin in user.pins}))


def _issuing_ca(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for ca in cas:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return ca
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def plan_users(
    certificates: Iterable[x509.Certificate],
    scope: Scope,
    *,
    ca_certificates: Sequence[x509.Certificate],
    revocations: Revocations | None = None,
    role_patterns: Sequence[tuple[str, str]] = (),
    job_policy: PolicySet | None = None,
    now: dt.datetime | None = None,
) -> Authorization:
    """Which certificates become which users (pure).

    A certificate is admitted when a trusted CA issued it, it has not expired,
    it is not revoked, and it has a broker role: one of its ``OU`` values, or,
    when it has none of them (a Puppet certificate), the role of the first
    ``(role, glob)`` in ``role_patterns`` its name matches. Certificates of
    the same user (a rotation in progress) share one user with every key pinned.
    With ``job_policy``, its ``jobs.policy`` grants users reads of other users' jobs
    (nmc.authz.jobread; JobPolicyError when it has errors).
    """
    moment = now or dt.datetime.now(dt.timezone.utc)
    for role, _ in role_patterns:
        if role not in ROLE_PERMISSIONS:
            raise ValueError(f"unknown broker role {role!r} in a role pattern: use {', '.join(ROLE_PERMISSIONS)}")
    merged: dict[str, tuple[str, set[str], set[str]]] = {}
    skipped: list[Skipped] = []
    brokers: set[tuple[str, str]] = set()
    seen: set[bytes] = set()
    for cert in certificates:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der in seen:
            continue
        seen.add(der)
        try:
            name = certificate_name(cert)
        except SecurityError:
            name = cert.subject.rfc4514_string()
        reason = _refusal(cert, ca_certificates, revocations, moment)
        roles = [r for r in certificate_roles(cert) if r in ROLE_PERMISSIONS]
        if reason is None and BROKER_ROLE in certificate_roles(cert):
            brokers.add((name, spki_pin(cert)))
        if reason is None and not roles:
            if BROKER_ROLE in certificate_roles(cert) or _is_ca(cert):
                continue  # the broker's own certificate (or a CA) is no client
            roles = [role for role, glob in role_patterns if fnmatch.fnmatchcase(name, glob)][:1]  # first match
            if not roles:
                reason = (f"no broker role ({', '.join(ROLE_PERMISSIONS)}) among its roles "
                          f"{list(certificate_roles(cert)) or '(none)'}")
        if reason is not None:
            skipped.append(Skipped(name, reason))
            continue
        user = nats_user(cert)
        known_name, known_roles, pins = merged.setdefault(user, (name, set(), set()))
        if known_name != name:
            skipped.append(Skipped(name, f"maps to NATS user {user!r}, already taken by {known_name!r}"))
            continue
        known_roles.update(roles)
        pins.add(spki_pin(cert))
    people = [name for name, user_roles, _ in merged.values() if USER_ROLE in user_roles]
    grants = job_read_grants(job_policy, people, people) if job_policy is not None else {}
    users = []
    for user, (name, user_roles, pins) in sorted(merged.items()):
        permissions = Permissions()
        for role in sorted(user_roles):
            permissions = permissions | ROLE_PERMISSIONS[role](name, scope)
        if name in grants:
            permissions = permissions | job_reader_permissions(grants[name], scope)
        users.append(BrokerUser(user=user, name=name, roles=tuple(sorted(user_roles)), pins=tuple(sorted(pins)),
                                permissions=permissions))
    return Authorization(users=tuple(users), skipped=tuple(skipped), brokers=tuple(sorted(brokers)))


def _refusal(cert: x509.Certificate, cas: Sequence[x509.Certificate], revocations: Revocations | None,
             now: dt.datetime) -> str | None:
    ca = _issuing_ca(cert, cas)
    if ca is None:
        return f"not issued by a trusted CA (issuer '{cert.issuer.rfc4514_string()}')"
    if cert.not_valid_after_utc < now:
        return f"expired {cert.not_valid_after_utc.isoformat()}"
    if revocations is not None:
        entry = revocations.lookup(ca_fingerprint(ca), cert.serial_number)
        if entry is not None:
            return f"serial {cert.serial_number:x} {entry.describe()}"
    return None


def _quote(value: str) -> str:
    text = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _subjects(values: Sequence[str]) -> str:
    return "[" + ", ".join(_quote(v) for v in values) + "]"


def render_authorization(auth: Authorization) -> str:
    """The nats-server ``authorization`` block for ``auth`` (pure); an empty list admits nobody."""
    lines = ["authorization {",
             "  # One user per certificate (tls verify_and_map maps the certificate's SAN to the user);",
             "  # generated by nmc: regenerate after issuing or revoking a certificate, then reload the broker.",
             "  users = ["]
    for user in auth.users:
        perms = user.permissions
        lines.append(f"    # {user.name}: roles {', '.join(user.roles)}")
        lines.append("    {")
        lines.append(f"      user: {_quote(user.user)}")
        lines.append("      permissions: {")
        for what, subjects, deny in (("publish", perms.publish, perms.publish_deny),
                                     ("subscribe", perms.subscribe, ())):
            rule = f"allow: {_subjects(subjects)}" if subjects else 'deny: [">"]'
            if subjects and deny:
                rule += f", deny: {_subjects(deny)}"
            lines.append(f"        {what}: {{ {rule} }}")
        if perms.allow_responses:
            lines.append("        allow_responses: true")
        lines.append("      }")
        lines.append("    }")
    lines.append("  ]")
    for skip in auth.skipped:
        lines.append(f"  # skipped {skip.name}: {' '.join(skip.reason.splitlines())}")
    lines.append("}")
    return "\n".join(lines)


@dataclass(frozen=True)
class TrustSources:
    """Where a TLS broker's certificates come from: an nmc CA directory, or files (e.g. a Puppet CA's).

    With ``ca_dir``: ``ca.pem``, ``crl.pem`` (if present) and every certificate in
    ``certs/`` and ``old/``; the broker's own certificate is ``certs/<server_name>.pem``,
    issued (role ``broker``, valid for 127.0.0.1 and localhost) when missing.
    Any of these can be given as files instead; ``extra_certs`` are more
    certificates (files or directories of ``*.pem``) to admit.
    """

    ca_dir: Path | None = None
    ca_file: Path | None = None
    crl_file: Path | None = None
    server_cert: Path | None = None
    server_key: Path | None = None
    server_name: str = "broker"
    extra_certs: tuple[Path, ...] = ()
    role_patterns: tuple[tuple[str, str], ...] = ()
    server_roles: tuple[str, ...] = (BROKER_ROLE,)  # of the broker's own certificate; a site's leaf adds "leaf"
    policy_dir: Path | None = None  # the policy service's directory: its jobs.policy grants job reads

    def __post_init__(self) -> None:
        """A CA directory or the files it would provide."""
        if self.ca_dir is None and (self.ca_file is None or self.server_cert is None or self.server_key is None):
            raise BrokerError("a TLS broker needs --ca-dir, or --ca-file with --tls-cert and --tls-key")
        if (self.server_cert is None) != (self.server_key is None):
            raise BrokerError("--tls-cert and --tls-key go together")


def _name_of(cert: x509.Certificate) -> str:
    try:
        return certificate_name(cert)
    except SecurityError:
        return cert.subject.rfc4514_string()


def _read_certificates(path: Path) -> list[x509.Certificate]:
    files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
    found: list[x509.Certificate] = []
    for file in files:
        try:
            found += load_certificates_pem(file.read_bytes())
        except OSError as exc:
            raise BrokerError(f"cannot read certificates from {file}: {exc.strerror or exc}") from None
        except SecurityError as exc:
            if path.is_dir():
                continue  # a directory may hold other PEM files (keys, CRLs)
            raise BrokerError(f"{file}: {exc.reason}") from None
    return found


def secure_broker_settings(
    settings: BrokerSettings, sources: TrustSources, scope: Scope = Scope(), *, now: dt.datetime | None = None,
) -> tuple[BrokerSettings, Authorization]:
    """``settings`` with TLS, verify_and_map, pinned keys and one user per admitted certificate."""
    try:
        crl_file: Path | None
        if sources.ca_dir is not None:
            ca_file = sources.ca_file or pki.ca_paths(sources.ca_dir).certificate
            crl_file = sources.crl_file or pki.crl_path(sources.ca_dir)
            server_cert, server_key = sources.server_cert, sources.server_key
            if server_cert is None or server_key is None:
                paths = pki.issued_paths(sources.ca_dir, sources.server_name)
                # Missing, or left from a CA made again since (nmc dev up used to keep it and then
                # every TLS handshake failed), or expiring: issue it anew from the CA in force.
                if not paths.certificate.exists() or not paths.key.exists() or pki.issued_problem(
                        sources.ca_dir, sources.server_name) is not None:
                    pki.issue(sources.ca_dir, sources.server_name, roles=sources.server_roles, server=True, force=True)
                server_cert, server_key = paths.certificate, paths.key
            certificates = [cert for _, cert in pki.issued_certificates(sources.ca_dir)]
        else:
            assert sources.ca_file is not None and sources.server_cert is not None and sources.server_key is not None
            ca_file, crl_file = sources.ca_file, sources.crl_file
            server_cert, server_key = sources.server_cert, sources.server_key
            certificates = []
    except pki.PKIError as exc:
        raise BrokerError(exc.reason) from None
    for extra in sources.extra_certs:
        certificates += _read_certificates(extra)
    # The broker's own certificate is no client, whatever a role pattern says (Puppet's signed/ holds it too).
    own_certs = _read_certificates(server_cert)
    own = {c.public_bytes(serialization.Encoding.DER) for c in own_certs}
    certificates = [c for c in certificates if c.public_bytes(serialization.Encoding.DER) not in own]
    # Certificates of another CA (Puppet's) carry no nmc roles at all: their roles come from name
    # patterns, so only an nmc certificate that has roles but lacks these is a mistake worth stopping for.
    own_roles = certificate_roles(own_certs[0]) if own_certs else ()
    missing = [r for r in sources.server_roles if own_roles and r not in own_roles]
    if missing:
        raise BrokerError(f"{server_cert}: the broker's certificate lacks role {', '.join(missing)} (reissue it: "
                          f"nmc ops ca issue NAME --server {' '.join('--role ' + r for r in sources.server_roles)} "
                          f"--force)")
    cas = _read_certificates(ca_file)
    revocations: RevocationList | None = None
    if crl_file is not None and crl_file.exists():
        try:
            revocations = RevocationList.from_pem(crl_file.read_bytes(), cas)
        except (OSError, SecurityError) as exc:
            raise BrokerError(f"{crl_file}: {getattr(exc, 'reason', None) or exc}") from None
    job_policy = load_policy_dir(sources.policy_dir) if sources.policy_dir is not None else None
    try:
        auth = plan_users(certificates, scope, ca_certificates=cas, revocations=revocations,
                          role_patterns=sources.role_patterns, job_policy=job_policy, now=now)
    except JobPolicyError as exc:
        raise BrokerError(f"{sources.policy_dir}/{exc}" if exc.in_file else str(exc)) from None
    except ValueError as exc:
        raise BrokerError(str(exc)) from None
    # The broker's own key is a route peer of itself (servers of one machine may share a certificate).
    own_pins = {(_name_of(c), spki_pin(c)) for c in own_certs}
    auth = replace(auth, brokers=tuple(sorted({*auth.brokers, *own_pins})))
    secured = replace(settings, tls_cert=Path(os.path.abspath(server_cert)), tls_key=Path(os.path.abspath(server_key)),
                      tls_ca=Path(os.path.abspath(ca_file)), tls_map=True, tls_pinned=auth.pins,
                      authorization=render_authorization(auth))
    return secured, auth

