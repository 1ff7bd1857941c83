"""The broker's half of the security model: one NATS user per certificate, permissions by role.

nats-server's ``verify_and_map`` makes the client certificate's name the NATS
user (``nmc.security.names.nats_user``); each user gets the permissions of
the roles its certificate carries (subject ``OU``):

- ``node``: hears requests for itself and its collective, asks the policy
  service, writes its own audit records and its own registry key, answers
  what it was asked (``allow_responses``) and reads only its own inbox;
- ``user``: publishes requests and ``$SRV`` discovery, reads the registry
  and the audit stream through consumers delivering to its inbox, and
  subscribes to nothing but ``_INBOX.<its name>.>``;
- ``policy``: answers ``nmc.*.authz.check``, announces reloads;
- ``audit``: owns the ``NMC_AUDIT`` stream and its durable consumer;
- ``leaf``: a site's leaf server (docs/clusters.md): on the hub, its
  connection carries the traffic of a whole site's nodes and users, so it
  gets their permissions for every name, and nothing beyond the collective.

Everything else is denied. ``pinned_certs`` lists the public keys of the
certificates admitted (issued, not revoked, not expired), so a revoked
certificate is refused at the TLS handshake even when a newer certificate
of the same name is still admitted.

The permission sets and ``render_authorization`` are pure;
``secure_broker_settings`` is the one function that reads (and, for the
broker's own certificate, writes) files.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from nmc.ops import pki
from nmc.ops.broker import BrokerError, BrokerSettings
from nmc.protocol.registry import DEFAULT_BUCKET, check_bucket, registry_key
from nmc.protocol.subjects import PREFIX, encode_token
from nmc.security import (
    SecurityError,
    certificate_name,
    certificate_roles,
    load_certificates_pem,
)
from nmc.security.crl import RevocationList, Revocations, ca_fingerprint
from nmc.security.names import inbox_prefix, nats_user

__all__ = [
    "AUDIT_STREAM",
    "BROKER_ROLE",
    "LEAF_ROLE",
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
    "plan_users",
    "policy_permissions",
    "render_authorization",
    "secure_broker_settings",
    "spki_pin",
    "user_permissions",
]

AUDIT_STREAM = "NMC_AUDIT"
BROKER_ROLE = "broker"
LEAF_ROLE = "leaf"
_JS = "$JS.API"


@dataclass(frozen=True)
class Scope:
    """What the permissions are about: the collective, the registry bucket and the audit stream."""

    collective: str = "nmc"
    registry_bucket: str = DEFAULT_BUCKET
    audit_stream: str = AUDIT_STREAM
    audit_consumer: str = "nmc-audit"  # the audit service's durable: no user may read, move or delete it
    jetstream_domain: str = ""  # a hub's domain: its leaf servers send JetStream API requests as $JS.<domain>.API

    def __post_init__(self) -> None:
        """Refuse names that would not make valid subjects."""
        if not self.collective:
            raise ValueError("collective must not be empty")
        check_bucket(self.registry_bucket)
        for what, name in (("audit stream", self.audit_stream), ("audit consumer", self.audit_consumer)):
            if not name or any(c in name for c in " .*>\t\r\n"):
                raise ValueError(f"{what} name {name!r} must be one subject token")

    @property
    def base(self) -> str:
        """``nmc.<encoded collective>``: the root of every request subject."""
        return f"{PREFIX}.{encode_token(self.collective)}"

    @property
    def registry_stream(self) -> str:
        """The stream behind the registry bucket."""
        return f"KV_{self.registry_bucket}"


@dataclass(frozen=True)
class Permissions:
    """What one NATS user may publish and subscribe to; ``allow_responses`` lets it answer what it received."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    allow_responses: bool = False
    publish_deny: tuple[str, ...] = ()  # exceptions carved out of `publish`

    def __or__(self, other: Permissions) -> Permissions:
        """The union: a certificate with two roles gets both.

        nats-server lets a deny win over any allow, so a subject one role denies
        stays denied only where the other role does not allow it.
        """
        deny = [d for d in self.publish_deny if not other._allows(d)]
        deny += [d for d in other.publish_deny if not self._allows(d)]
        return Permissions(publish=_merge(self.publish, other.publish), subscribe=_merge(self.subscribe, other.subscribe),
                           allow_responses=self.allow_responses or other.allow_responses,
                           publish_deny=_merge(deny, ()))


    def _allows(self, subject: str) -> bool:
        """Whether these permissions alone let `subject` (and all it stands for) be published."""
        return (any(_covers(p, subject) for p in self.publish)
                and not any(_covers(d, subject) for d in self.publish_deny))


def _merge(a: Iterable[str], b: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))


def _covers(pattern: str, subject: str) -> bool:
    """Whether every subject `subject` stands for (wildcards in it included) matches `pattern`."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or have[i] == ">" or (token != "*" and token != have[i]) or (token == "*" and have[i] == ">"):
            return False
    return len(want) == len(have)


def _inbox(name: str) -> str:
    return f"{inbox_prefix(name)}.>"


def node_permissions(name: str, scope: Scope) -> Permissions:
    """A node named ``name``: its requests, its inbox, its audit records and registry key; answers by reply only."""
    base, kv = scope.base, scope.registry_stream
    return Permissions(
        subscribe=(f"{base}.node.{encode_token(name)}.>", f"{base}.all.>", f"{base}.fact.>", f"{base}.class.>",
                   f"{base}.authz.reloaded", "$SRV.>", _inbox(name)),
        publish=(f"{base}.authz.check",
                 f"{PREFIX}.audit.{encode_token(scope.collective)}.{encode_token(name)}",
                 f"$KV.{scope.registry_bucket}.{registry_key(scope.collective, name)}",
                 # The registry publisher and the audit publisher look their stream up, and create it when
                 # they come first (a create that differs from an existing stream fails: no takeover).
                 f"{_JS}.STREAM.INFO.{kv}", f"{_JS}.STREAM.CREATE.{kv}",
                 f"{_JS}.STREAM.INFO.{scope.audit_stream}", f"{_JS}.STREAM.CREATE.{scope.audit_stream}"),
        allow_responses=True,
    )


def user_permissions(name: str, scope: Scope) -> Permissions:
    """A person or script: requests and discovery out, replies only into its own inbox."""
    base, kv, audit = scope.base, scope.registry_stream, scope.audit_stream
    reads: list[str] = []
    for stream in (kv, audit):
        reads += [f"{_JS}.STREAM.INFO.{stream}", f"{_JS}.CONSUMER.CREATE.{stream}",
                  f"{_JS}.STREAM.MSG.GET.{stream}", f"{_JS}.DIRECT.GET.{stream}.>"]
    # `nmc audit` reads through named, unacknowledged pull consumers of its own; the audit
    # service's durable is carved out, so a user can neither take its records nor delete it.
    reads += [f"{_JS}.CONSUMER.CREATE.{audit}.>", f"{_JS}.CONSUMER.INFO.{audit}.*",
              f"{_JS}.CONSUMER.DELETE.{audit}.*", f"{_JS}.CONSUMER.MSG.NEXT.{audit}.*"]
    durable = scope.audit_consumer
    deny = (f"{_JS}.CONSUMER.CREATE.{audit}.{durable}", f"{_JS}.CONSUMER.CREATE.{audit}.{durable}.>",
            f"{_JS}.CONSUMER.INFO.{audit}.{durable}", f"{_JS}.CONSUMER.DELETE.{audit}.{durable}",
            f"{_JS}.CONSUMER.MSG.NEXT.{audit}.{durable}")
    return Permissions(
        publish=(f"{base}.all.>", f"{base}.fact.>", f"{base}.class.>", f"{base}.node.>", "$SRV.>", *reads),
        subscribe=(_inbox(name),),
        publish_deny=deny,
    )


def policy_permissions(name: str, scope: Scope) -> Permissions:
    """The action-policy service: answers authorization questions of every collective, announces reloads."""
    return Permissions(
        subscribe=(f"{PREFIX}.*.authz.check", "$SRV.>", _inbox(name)),
        publish=(f"{PREFIX}.*.authz.reloaded",),
        allow_responses=True,
    )


def audit_permissions(name: str, scope: Scope) -> Permissions:
    """The audit service: creates the audit stream and reads it through its durable consumer."""
    stream = scope.audit_stream
    return Permissions(
        subscribe=("$SRV.>", _inbox(name)),
        publish=(f"{_JS}.STREAM.CREATE.{stream}", f"{_JS}.STREAM.UPDATE.{stream}", f"{_JS}.STREAM.INFO.{stream}",
                 f"{_JS}.STREAM.NAMES",
                 f"{_JS}.CONSUMER.CREATE.{stream}", f"{_JS}.CONSUMER.CREATE.{stream}.>",
                 f"{_JS}.CONSUMER.DURABLE.CREATE.{stream}.>", f"{_JS}.CONSUMER.INFO.{stream}.>",
                 f"{_JS}.CONSUMER.MSG.NEXT.{stream}.>", f"$JS.ACK.{stream}.>", f"$JS.FC.{stream}.>"),
        allow_responses=True,
    )


def leaf_permissions(name: str, scope: Scope) -> Permissions:
    """A site's leaf server: what the site's nodes and users may do, for any of their names.

    The hub cannot see which certificate sent a message through a leaf connection: the
    site's leaf server checks its own clients (the same CA, verify_and_map, per-role
    users). The hub trusts it for the whole collective's requests, answers, audit
    records and registry keys, and for nothing else (no $SYS, no stream deletion,
    never the audit service's durable consumer).
    """
    base = scope.base
    node, user = node_permissions(name, scope), user_permissions(name, scope)
    # A site's leaf server maps $JS.API to the hub's domain: that is the subject the hub sees.
    api = f"$JS.{scope.jetstream_domain}.API" if scope.jetstream_domain else _JS
    js = [api + s[len(_JS):] for s in (*node.publish, *user.publish) if s.startswith(_JS)]
    deny = tuple(api + s[len(_JS):] for s in user.publish_deny)
    return Permissions(
        publish=(f"{base}.all.>", f"{base}.fact.>", f"{base}.class.>", f"{base}.node.>", f"{base}.authz.>",
                 f"{PREFIX}.audit.{encode_token(scope.collective)}.>", f"$KV.{scope.registry_bucket}.>",
                 "$SRV.>", "_INBOX.>", *_merge(js, ())),
        subscribe=(f"{base}.>", "$SRV.>", "_INBOX.>"),
        allow_responses=True,
        publish_deny=deny,
    )


ROLE_PERMISSIONS: Mapping[str, Callable[[str, Scope], Permissions]] = MappingProxyType({
    "audit": audit_permissions,
    "leaf": leaf_permissions,
    "node": node_permissions,
    "policy": policy_permissions,
    "user": user_permissions,
})


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
    now: dt.datetime | None = None,
) -> Authorization:
    """Which certificates become which users (pure).

    A certificate is admitted when a trusted CA issued it, it has not expired,
    it is not revoked, and it has a broker role: one of its ``OU`` values, or,
    when it has none of them (a Puppet certificate), the role of the first
    ``(role, glob)`` in ``role_patterns`` its name matches. Certificates of
    the same user (a rotation in progress) share one user with every key pinned.
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
    users = []
    for user, (name, user_roles, pins) in sorted(merged.items()):
        permissions = Permissions()
        for role in sorted(user_roles):
            permissions = permissions | ROLE_PERMISSIONS[role](name, scope)
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
    try:
        auth = plan_users(certificates, scope, ca_certificates=cas, revocations=revocations,
                          role_patterns=sources.role_patterns, now=now)
    except ValueError as exc:
        raise BrokerError(str(exc)) from None
    # The broker's own key is a route peer of itself (servers of one machine may share a certificate).
    own_pins = {(_name_of(c), spki_pin(c)) for c in own_certs}
    auth = replace(auth, brokers=tuple(sorted({*auth.brokers, *own_pins})))
    secured = replace(settings, tls_cert=Path(os.path.abspath(server_cert)), tls_key=Path(os.path.abspath(server_key)),
                      tls_ca=Path(os.path.abspath(ca_file)), tls_map=True, tls_pinned=auth.pins,
                      authorization=render_authorization(auth))
    return secured, auth

