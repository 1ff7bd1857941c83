"""The fleet CA: create it, issue certificates, read names and roles back.

A certificate's common name is the identity everything else uses (``caller``
is ``cert=<CN>``; nats-server's ``verify_and_map`` maps the SAN to a user);
each ``OU`` in the subject is a role the policy service can match on.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nmc.security.errors import CertificateError, PrivateKeyError
from nmc.security.keys import KeyType, PrivateKey, generate_key

__all__ = [
    "certificate_fingerprint",
    "certificate_name",
    "certificate_roles",
    "create_ca",
    "issue_certificate",
]

# Certificates start a little in the past so a node whose clock runs a few
# minutes behind the CA's still accepts a certificate issued just now.
_BACKDATE = dt.timedelta(minutes=5)
_MAX_NAME = 64  # X.520 upper bound for CN and OU


def create_ca(
    common_name: str = "nmc fleet CA",
    *,
    key_type: KeyType = "ed25519",
    days: int = 3650,
    now: dt.datetime | None = None,
) -> tuple[PrivateKey, x509.Certificate]:
    """A new self-signed CA key and certificate valid for ``days`` from ``now``."""
    _check_text("CA common name", common_name)
    _check_days(days)
    start = _aware(now) if now is not None else dt.datetime.now(dt.timezone.utc)
    key = generate_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _hash_for(key))
    )
    return key, cert


def issue_certificate(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    name: str,
    *,
    key_type: KeyType = "ed25519",
    days: int = 365,
    roles: Iterable[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key: PrivateKey | None = None,
    server: bool = False,
) -> tuple[PrivateKey, x509.Certificate]:
    """A key (new unless ``key`` is given) and a certificate for ``name`` signed by the CA.

    ``server=True`` adds SANs for 127.0.0.1 and localhost so the certificate
    also serves a local broker's TLS listener.
    """
    _check_text("certificate name", name)
    roles = tuple(roles)
    for role in roles:
        _check_text("role", role)
    if _public_der(ca_key) != ca_cert.public_key().public_bytes(*_SPKI):
        raise PrivateKeyError("the CA private key does not match the CA certificate")
    start = _aware(not_before) if not_before is not None else dt.datetime.now(dt.timezone.utc) - _BACKDATE
    if not_after is not None:
        end = _aware(not_after)
    else:
        _check_days(days)
        end = start + dt.timedelta(days=days)
    if end <= start:
        raise ValueError(
            f"certificate for {name!r} would end ({end.isoformat()}) before it starts ({start.isoformat()})"
        )
    if key is None:
        key = generate_key(key_type)
    public = key.public_key()
    # Most general first, as X.509 subjects are conventionally ordered, so the
    # RFC 4514 string nats-server maps reads "CN=alice,OU=ops".
    attributes = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role) for role in roles]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_alt_names(name, server)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(authority_key_id(ca_cert), critical=False)
        .sign(ca_key, _hash_for(ca_key))
    )
    return key, cert


def certificate_name(cert: x509.Certificate) -> str:
    """The certificate's common name; CertificateError if it has none."""
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        raise CertificateError(f"certificate '{cert.subject.rfc4514_string()}' has no common name")
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def certificate_roles(cert: x509.Certificate) -> tuple[str, ...]:
    """The roles (subject ``OU`` values) of the certificate, in subject order."""
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return tuple(v.value if isinstance(v.value, str) else v.value.decode("utf-8", "replace") for v in values)


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint as colon-separated upper-case hex, as ``openssl x509 -fingerprint`` prints it."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _public_der(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(*_SPKI)


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519 signs the message itself; cryptography requires None there.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _alt_names(name: str, server: bool) -> list[x509.GeneralName]:
    # A name with '@' is a person's address: nats-server maps an email SAN
    # before a DNS SAN, and a DNS SAN with '@' would be malformed anyway.
    names: list[x509.GeneralName] = [x509.RFC822Name(name) if "@" in name else x509.DNSName(name)]
    if server:
        if name != "localhost":
            names.append(x509.DNSName("localhost"))
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    return names


def authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AuthorityKeyIdentifier that certificates and CRLs signed by `ca_cert` carry.

    One definition for both (crl.py imports it), so a certificate and a CRL of the same CA
    always name it alike. It prefers the CA's own SKI: a Puppet CA's may not be the SHA-1
    of its key, and verifiers match the two byte for byte.
    """
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _aware(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime {moment.isoformat()} has no timezone: pass an aware datetime")
    return moment


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a whole number of at least 1, not {days!r}")


def _check_text(what: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, not {value!r}")
    if len(value) > _MAX_NAME:
        raise ValueError(f"{what} {value!r} is longer than {_MAX_NAME} characters")
    if not value.isprintable():
        raise ValueError(f"{what} {value!r} contains control characters")
