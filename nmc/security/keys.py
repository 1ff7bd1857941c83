"""Keys and PEM: generate, sign, verify, load and dump; bytes in, values out.

Three key types are supported. RSA signs with PKCS#1 v1.5 + SHA-256 so keys
and certificates from an existing Puppet CA work unchanged; ECDSA signatures
are DER-encoded, as OpenSSL and Go produce them.
"""

from __future__ import annotations

from typing import Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from nmc.security.errors import CertificateError, PrivateKeyError, SignatureError

__all__ = [
    "KEY_TYPES",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "certificate_pem",
    "generate_key",
    "key_type_of",
    "load_certificate_pem",
    "load_certificates_pem",
    "load_private_key_pem",
    "private_key_pem",
    "sign_bytes",
    "verify_bytes",
]

KeyType = Literal["ed25519", "rsa", "ecdsa-p256"]
KEY_TYPES: tuple[str, ...] = get_args(KeyType)

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_RSA_BITS = 2048


def generate_key(key_type: KeyType = "ed25519") -> PrivateKey:
    """A fresh private key of ``key_type`` (RSA is 2048 bits, ECDSA is P-256)."""
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r}: expected one of {', '.join(KEY_TYPES)}")


def key_type_of(key: PrivateKey | PublicKey) -> str:
    """A short human name for a key's type, e.g. ``ed25519``, ``rsa-2048``, ``ecdsa-secp256r1``."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"rsa-{key.key_size}"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"ecdsa-{key.curve.name}"
    return type(key).__name__


def sign_bytes(private_key: PrivateKey, data: bytes) -> bytes:
    """Sign ``data`` with ``private_key`` using the scheme fixed for its type."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    raise PrivateKeyError(f"cannot sign with a {type(private_key).__name__} key")


def verify_bytes(public_key: PublicKey, signature: bytes, data: bytes) -> None:
    """Return if ``signature`` is valid over ``data`` for ``public_key``, else raise SignatureError."""
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            raise SignatureError(f"cannot verify with a {type(public_key).__name__} key")
    except InvalidSignature:
        raise SignatureError("signature does not verify over the body") from None


def load_private_key_pem(data: bytes) -> PrivateKey:
    """Load an unencrypted PEM private key (PKCS#8 or the older PKCS#1/SEC1 forms Puppet writes)."""
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise PrivateKeyError("no PEM private key found (expected a '-----BEGIN ... PRIVATE KEY-----' block)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError when the key is encrypted and no password was given.
        raise PrivateKeyError("private key is encrypted; nmc needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PrivateKeyError(f"malformed PEM private key: {_first_line(exc)}") from None
    if not isinstance(key, (ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise PrivateKeyError(f"unsupported private key type {type(key).__name__}: use ed25519, rsa or ecdsa")
    return key


def private_key_pem(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (protect the file with its mode, not a password)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_certificate_pem(data: bytes) -> x509.Certificate:
    """Load the first certificate of PEM ``data``; CertificateError if there is none."""
    return load_certificates_pem(data)[0]


def load_certificates_pem(data: bytes) -> list[x509.Certificate]:
    """Load every certificate of a PEM bundle, in order; CertificateError if there is none."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CertificateError("no PEM certificate found (expected a '-----BEGIN CERTIFICATE-----' block)")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"malformed PEM certificate: {_first_line(exc)}") from None


def certificate_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
