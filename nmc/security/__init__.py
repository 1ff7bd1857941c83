"""Certificates, keys, signing, verification and the replay cache; bytes in, values out, no NATS."""

from __future__ import annotations

from nmc.security.ca import (
    certificate_fingerprint,
    certificate_name,
    certificate_roles,
    create_ca,
    issue_certificate,
)
from nmc.security.errors import (
    CallerMismatchError,
    CertificateError,
    ClockSkewError,
    PrivateKeyError,
    ReplayCapacityError,
    ReplayError,
    SecurityError,
    SignatureError,
    StaleRequestError,
)
from nmc.security.keys import (
    KEY_TYPES,
    KeyType,
    PrivateKey,
    PublicKey,
    certificate_pem,
    generate_key,
    key_type_of,
    load_certificate_pem,
    load_certificates_pem,
    load_private_key_pem,
    private_key_pem,
    sign_bytes,
    verify_bytes,
)
from nmc.security.replay import ReplayCache
from nmc.security.signing import (
    CERTIFICATE_HEADER,
    SIGNATURE_HEADER,
    Signer,
    Verifier,
    check_caller,
    check_time,
)

__all__ = [
    "CERTIFICATE_HEADER",
    "CallerMismatchError",
    "CertificateError",
    "ClockSkewError",
    "KEY_TYPES",
    "KeyType",
    "PrivateKey",
    "PrivateKeyError",
    "PublicKey",
    "ReplayCache",
    "ReplayCapacityError",
    "ReplayError",
    "SIGNATURE_HEADER",
    "SecurityError",
    "SignatureError",
    "Signer",
    "StaleRequestError",
    "Verifier",
    "certificate_fingerprint",
    "certificate_name",
    "certificate_pem",
    "certificate_roles",
    "check_caller",
    "check_time",
    "create_ca",
    "generate_key",
    "issue_certificate",
    "key_type_of",
    "load_certificate_pem",
    "load_certificates_pem",
    "load_private_key_pem",
    "private_key_pem",
    "sign_bytes",
    "verify_bytes",
]
