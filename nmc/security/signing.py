"""Sign message bodies and verify them against the fleet CA.

A signed message carries two headers: ``Nmc-Signature`` (base64 signature
over the exact body bytes) and ``Nmc-Certificate`` (base64 DER of the
signer's certificate). The verifier checks the certificate against the CA
once per distinct certificate and caches the result, so the steady-state
cost of ``verify()`` is one dict lookup, a few float comparisons and one
signature check.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from nmc.security.ca import certificate_name, certificate_roles
from nmc.security.crl import Revocations, ca_fingerprint
from nmc.security.errors import (
    CallerMismatchError,
    CertificateError,
    ClockSkewError,
    SignatureError,
)
from nmc.security.keys import (
    PrivateKey,
    PublicKey,
    load_certificate_pem,
    load_certificates_pem,
    load_private_key_pem,
    sign_bytes,
    verify_bytes,
)
from nmc.security.names import NamePolicy

__all__ = [
    "CERTIFICATE_HEADER",
    "SIGNATURE_HEADER",
    "Signer",
    "Verifier",
    "check_caller",
    "check_time",
]

SIGNATURE_HEADER = "Nmc-Signature"
CERTIFICATE_HEADER = "Nmc-Certificate"

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class Signer:
    """Signs bodies with one private key and presents its certificate."""

    def __init__(self, private_key: PrivateKey, certificate: x509.Certificate) -> None:
        self._name = certificate_name(certificate)
        # A mismatched pair would sign happily and fail on every receiver;
        # refuse it here where the cause is obvious.
        if private_key.public_key().public_bytes(*_SPKI) != certificate.public_key().public_bytes(*_SPKI):
            raise CertificateError(f"the private key does not match certificate {self._name!r}")
        self._key = private_key
        self._certificate = certificate
        self._certificate_b64 = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> Signer:
        """A signer from a PEM certificate and its unencrypted PEM private key."""
        return cls(load_private_key_pem(key_pem), load_certificate_pem(cert_pem))

    @property
    def name(self) -> str:
        """The certificate's common name."""
        return self._name

    @property
    def caller(self) -> str:
        """The ``caller`` value for requests signed by this signer: ``cert=<name>``."""
        return "cert=" + self._name

    @property
    def certificate(self) -> x509.Certificate:
        """The signer's certificate."""
        return self._certificate

    @property
    def certificate_b64(self) -> str:
        """The certificate as base64 DER, the value of the ``Nmc-Certificate`` header."""
        return self._certificate_b64

    def sign(self, body: bytes) -> str:
        """The base64 signature over the exact ``body`` bytes."""
        return base64.b64encode(sign_bytes(self._key, body)).decode("ascii")

    def headers(self, body: bytes) -> dict[str, str]:
        """The two NATS headers that make ``body`` a signed message."""
        return {SIGNATURE_HEADER: self.sign(body), CERTIFICATE_HEADER: self._certificate_b64}


@dataclass(frozen=True, slots=True)
class _Trusted:
    """A certificate that chains to a CA, reduced to what each verify() needs."""

    name: str
    serial: int
    ca_fingerprint: bytes
    public_key: PublicKey
    not_before: float
    not_after: float
    ca_name: str
    ca_not_before: float
    ca_not_after: float


class Verifier:
    """Verifies signed bodies against the fleet CA certificates; returns the signer's name.

    ``revocations`` (a CRL, usually a ``CrlFile`` that follows its file) is
    consulted on every verify, so a revocation counts for certificates already
    cached; ``names`` restricts the names each role (subject ``OU``) may have.
    """

    def __init__(
        self,
        ca_certificates: Iterable[x509.Certificate],
        *,
        cache_size: int = 4096,
        revocations: Revocations | None = None,
        names: NamePolicy | None = None,
    ) -> None:
        cas = list(ca_certificates)
        if not cas:
            raise CertificateError("no CA certificates given: cannot verify anything")
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, not {cache_size!r}")
        self._cas = tuple(cas)
        self._cache: OrderedDict[str, _Trusted] = OrderedDict()
        self._cache_size = cache_size
        self._revocations = revocations
        self._names = names if names else None

    @classmethod
    def from_pem(
        cls,
        bundle: bytes,
        *,
        cache_size: int = 4096,
        revocations: Revocations | None = None,
        names: NamePolicy | None = None,
    ) -> Verifier:
        """A verifier trusting every certificate in a PEM bundle."""
        return cls(load_certificates_pem(bundle), cache_size=cache_size, revocations=revocations, names=names)

    @property
    def ca_certificates(self) -> tuple[x509.Certificate, ...]:
        """The trusted CA certificates."""
        return self._cas

    def verify(
        self,
        body: bytes,
        signature_b64: str | None,
        certificate_b64: str | None,
        *,
        now: float | None = None,
    ) -> str:
        """The verified signer's common name, or a SecurityError subclass saying why not."""
        if not signature_b64:
            raise SignatureError(f"missing {SIGNATURE_HEADER} header")
        if not certificate_b64:
            raise CertificateError(f"missing {CERTIFICATE_HEADER} header")
        trusted = self._trusted(certificate_b64)
        self._check_current(trusted, now)
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError(f"{SIGNATURE_HEADER} header is not valid base64") from None
        verify_bytes(trusted.public_key, signature, body)
        return trusted.name

    def check_certificate(self, der: bytes, *, now: float | None = None) -> str:
        """The name of a certificate (DER) that chains to the CA, is valid now and not revoked; else CertificateError.

        For a certificate that signs nothing here: a TLS peer's (the web console's client
        certificates). OpenSSL checked chain and dates in the handshake; this adds the CRL,
        which it does not follow, and the name policy, with the same code as every signature.
        """
        trusted = self._trusted(base64.b64encode(der).decode("ascii"))
        self._check_current(trusted, now)
        return trusted.name

    def _check_current(self, trusted: _Trusted, now: float | None) -> None:
        _check_validity(trusted, time.time() if now is None else now)
        if self._revocations is not None:
            revoked = self._revocations.lookup(trusted.ca_fingerprint, trusted.serial)
            if revoked is not None:
                raise CertificateError(
                    f"certificate {trusted.name!r} (serial {trusted.serial:x}) is revoked: {revoked.describe()}"
                )

    def _trusted(self, certificate_b64: str) -> _Trusted:
        cached = self._cache.get(certificate_b64)
        if cached is not None:
            self._cache.move_to_end(certificate_b64)
            return cached
        try:
            trusted = self._check_chain(_decode_certificate(certificate_b64))
        except ValueError as exc:
            # cryptography parses some fields lazily; a malformed one surfaces here.
            raise CertificateError(f"{CERTIFICATE_HEADER} header holds a malformed certificate: {exc}") from None
        # Only certificates that chain are cached, so junk cannot evict good entries.
        self._cache[certificate_b64] = trusted
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return trusted

    def _check_chain(self, cert: x509.Certificate) -> _Trusted:
        name = certificate_name(cert)
        candidates = [ca for ca in self._cas if ca.subject == cert.issuer]
        if not candidates:
            raise CertificateError(
                f"certificate {name!r} was issued by '{cert.issuer.rfc4514_string()}', not a trusted CA"
            )
        for ca in candidates:
            try:
                cert.verify_directly_issued_by(ca)
            except (InvalidSignature, ValueError, TypeError):
                # Two CAs may share a subject (every default CA is 'nmc fleet CA'):
                # only the signature tells them apart, so try each one.
                continue
            public_key = cert.public_key()
            if not isinstance(public_key, (ed25519.Ed25519PublicKey, rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
                raise CertificateError(f"certificate {name!r} has an unsupported {type(public_key).__name__}")
            if self._names is not None:
                # After the chain check, so a foreign certificate is reported as foreign; the policy is
                # fixed per Verifier, so a certificate that passes may be cached.
                self._names.check(name, certificate_roles(cert))
            return _Trusted(
                name=name,
                serial=cert.serial_number,
                ca_fingerprint=ca_fingerprint(ca),
                public_key=public_key,
                not_before=cert.not_valid_before_utc.timestamp(),
                not_after=cert.not_valid_after_utc.timestamp(),
                ca_name=ca.subject.rfc4514_string(),
                ca_not_before=ca.not_valid_before_utc.timestamp(),
                ca_not_after=ca.not_valid_after_utc.timestamp(),
            )
        raise CertificateError(
            f"certificate {name!r} is not signed by a trusted CA (issuer '{cert.issuer.rfc4514_string()}'"
            " matches by name only)"
        )


def check_caller(caller: str, name: str) -> None:
    """Raise CallerMismatchError unless ``caller`` is ``cert=<name>``."""
    if caller != "cert=" + name:
        raise CallerMismatchError(caller, name)


def check_time(request_time: float, ttl: float, now: float, skew: float | None = None) -> None:
    """Raise ClockSkewError unless ``now - ttl <= request_time <= now + min(ttl, skew)``.

    ``skew`` is how far a caller's clock may run ahead of ours. Without it a request could
    be dated a whole ttl into the future, and stay valid (and be remembered) for twice its ttl.
    """
    if not (_finite(request_time) and _finite(ttl)):
        raise ClockSkewError(f"request time {request_time!r} and ttl {ttl!r} must be finite numbers")
    offset = request_time - now
    if skew is not None and offset > skew and skew < ttl:
        raise ClockSkewError(
            f"request time is {offset:.1f}s in the future (allowed clock skew {skew:g}s): clock skew?",
            offset=offset, ttl=ttl)
    if offset > ttl:
        raise ClockSkewError(
            f"request time is {offset:.1f}s in the future (ttl {ttl:g}s): clock skew?", offset=offset, ttl=ttl
        )
    if -offset > ttl:
        raise ClockSkewError(
            f"request is {-offset:.1f}s old (ttl {ttl:g}s): expired, or clock skew?", offset=offset, ttl=ttl
        )


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _decode_certificate(certificate_b64: str) -> x509.Certificate:
    try:
        der = base64.b64decode(certificate_b64, validate=True)
    except (binascii.Error, ValueError):
        raise CertificateError(f"{CERTIFICATE_HEADER} header is not valid base64") from None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise CertificateError(f"{CERTIFICATE_HEADER} header is not a DER X.509 certificate") from None


def _check_validity(trusted: _Trusted, now: float) -> None:
    if now < trusted.not_before:
        raise CertificateError(f"certificate {trusted.name!r} is not valid until {_iso(trusted.not_before)}")
    if now > trusted.not_after:
        raise CertificateError(f"certificate {trusted.name!r} expired at {_iso(trusted.not_after)}")
    if not trusted.ca_not_before <= now <= trusted.ca_not_after:
        raise CertificateError(
            f"CA certificate '{trusted.ca_name}' is outside its validity period"
            f" ({_iso(trusted.ca_not_before)} to {_iso(trusted.ca_not_after)})"
        )


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat()
