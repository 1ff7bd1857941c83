"""The fleet CA, issued certificates, keys and PEM helpers (nmc.security.ca / keys)."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nmc.security import (
    CertificateError,
    PrivateKeyError,
    SignatureError,
    certificate_fingerprint,
    certificate_name,
    certificate_pem,
    certificate_roles,
    create_ca,
    generate_key,
    issue_certificate,
    key_type_of,
    load_certificate_pem,
    load_certificates_pem,
    load_private_key_pem,
    private_key_pem,
    sign_bytes,
    verify_bytes,
)

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def rsa_key():
    """One RSA key per module: generating them is the slow part."""
    return generate_key("rsa")


@pytest.fixture(scope="module")
def ed_ca():
    return create_ca()


def _ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


def test_ca_certificate_is_a_self_signed_ca(ed_ca):
    key, cert = ed_ca
    assert certificate_name(cert) == "nmc fleet CA"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert _ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def test_ca_validity_follows_now_and_days():
    now = dt.datetime(2030, 1, 1, tzinfo=UTC)
    _, cert = create_ca("test CA", days=10, now=now)
    assert certificate_name(cert) == "test CA"
    assert cert.not_valid_before_utc <= now
    assert cert.not_valid_after_utc == now + dt.timedelta(days=10)


@pytest.mark.parametrize("key_type", ["rsa", "ecdsa-p256"])
def test_ca_of_other_key_types_signs_itself(key_type):
    _, cert = create_ca(key_type=key_type)
    cert.verify_directly_issued_by(cert)


def test_issued_certificate_names_roles_and_extensions(ed_ca):
    ca_key, ca_cert = ed_ca
    key, cert = issue_certificate(ca_key, ca_cert, "alice", roles=["ops", "web-admins"])
    assert certificate_name(cert) == "alice"
    assert certificate_roles(cert) == ("ops", "web-admins")
    # nats-server maps the RFC 4514 subject; the CN should lead it.
    assert cert.subject.rfc4514_string() == "CN=alice,OU=web-admins,OU=ops"
    cert.verify_directly_issued_by(ca_cert)
    assert cert.public_key() == key.public_key()
    assert list(_ext(cert, x509.SubjectAlternativeName).value) == [x509.DNSName("alice")]
    eku = _ext(cert, x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment and not usage.key_cert_sign
    assert not _ext(cert, x509.BasicConstraints).value.ca
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca_cert, x509.SubjectKeyIdentifier).value.digest


def test_server_certificate_covers_loopback(ed_ca):
    _, cert = issue_certificate(*ed_ca, "broker", server=True)
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_email_like_name_gets_an_email_san(ed_ca):
    _, cert = issue_certificate(*ed_ca, "bob@example.com")
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["bob@example.com"]


def test_rsa_certificate_allows_key_encipherment(ed_ca, rsa_key):
    key, cert = issue_certificate(*ed_ca, "rsa-node", key=rsa_key)
    assert key is rsa_key
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert cert.public_key().key_size == 2048
    assert _ext(cert, x509.KeyUsage).value.key_encipherment


def test_rsa_ca_issues_ecdsa_certificates(rsa_key):
    ca_key, ca_cert = create_ca(key_type="rsa")
    key, cert = issue_certificate(ca_key, ca_cert, "node", key_type="ecdsa-p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    cert.verify_directly_issued_by(ca_cert)


def test_explicit_validity_window(ed_ca):
    start = dt.datetime(2031, 5, 1, tzinfo=UTC)
    end = dt.datetime(2031, 6, 1, tzinfo=UTC)
    _, cert = issue_certificate(*ed_ca, "n", not_before=start, not_after=end)
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (start, end)
    _, cert = issue_certificate(*ed_ca, "n", not_before=start, days=2)
    assert cert.not_valid_after_utc == start + dt.timedelta(days=2)


def test_default_validity_is_days_from_now(ed_ca):
    before = dt.datetime.now(UTC)
    _, cert = issue_certificate(*ed_ca, "n", days=30)
    assert cert.not_valid_before_utc <= before
    assert before + dt.timedelta(days=29) < cert.not_valid_after_utc <= before + dt.timedelta(days=31)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty"),
        ({"name": "x" * 65}, "longer than 64"),
        ({"name": "a\nb"}, "control characters"),
        ({"name": "n", "roles": [""]}, "role"),
        ({"name": "n", "days": 0}, "at least 1"),
        ({"name": "n", "not_before": dt.datetime(2030, 1, 1)}, "no timezone"),
        (
            {
                "name": "n",
                "not_before": dt.datetime(2030, 1, 2, tzinfo=UTC),
                "not_after": dt.datetime(2030, 1, 1, tzinfo=UTC),
            },
            "before it starts",
        ),
        ({"name": "n", "key_type": "dsa"}, "unknown key type"),
    ],
)
def test_bad_issue_arguments_are_refused_in_one_line(ed_ca, kwargs, message):
    with pytest.raises(ValueError) as info:
        issue_certificate(*ed_ca, **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_issue_refuses_a_ca_key_that_does_not_match(ed_ca):
    other_key, _ = create_ca()
    with pytest.raises(PrivateKeyError, match="does not match"):
        issue_certificate(other_key, ed_ca[1], "n")


def test_certificate_without_common_name_is_refused(ed_ca):
    ca_key, ca_cert = ed_ca
    key = generate_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=UTC))
        .sign(ca_key, None)
    )
    with pytest.raises(CertificateError, match="no common name"):
        certificate_name(cert)
    assert certificate_roles(cert) == ()


def test_fingerprint_is_colon_hex_sha256(ed_ca):
    fingerprint = certificate_fingerprint(ed_ca[1])
    parts = fingerprint.split(":")
    assert len(parts) == 32 and all(len(p) == 2 and p == p.upper() for p in parts)


@pytest.mark.parametrize("key_type", ["ed25519", "rsa", "ecdsa-p256"])
def test_sign_and_verify_bytes(key_type, rsa_key):
    key = rsa_key if key_type == "rsa" else generate_key(key_type)
    signature = sign_bytes(key, b"body")
    verify_bytes(key.public_key(), signature, b"body")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bytes(key.public_key(), signature, b"bodY")


def test_rsa_signature_is_pkcs1v15_sha256(rsa_key):
    # Puppet-CA compatibility: the scheme must be exactly PKCS#1 v1.5 + SHA-256.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    rsa_key.public_key().verify(sign_bytes(rsa_key, b"x"), b"x", padding.PKCS1v15(), hashes.SHA256())


def test_key_type_names(rsa_key):
    assert key_type_of(generate_key()) == "ed25519"
    assert key_type_of(rsa_key.public_key()) == "rsa-2048"
    assert key_type_of(generate_key("ecdsa-p256")) == "ecdsa-secp256r1"


def test_generate_unknown_key_type():
    with pytest.raises(ValueError, match="unknown key type 'dsa'"):
        generate_key("dsa")  # type: ignore[arg-type]


@pytest.mark.parametrize("key_type", ["ed25519", "rsa", "ecdsa-p256"])
def test_private_key_pem_round_trip(key_type, rsa_key):
    key = rsa_key if key_type == "rsa" else generate_key(key_type)
    pem = private_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key_pem(pem)
    verify_bytes(key.public_key(), sign_bytes(loaded, b"x"), b"x")


def test_traditional_rsa_pem_loads(rsa_key):
    # Puppet writes "BEGIN RSA PRIVATE KEY" (PKCS#1).
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    assert isinstance(load_private_key_pem(pem), rsa.RSAPrivateKey)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a key", "no PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "malformed PEM private key"),
    ],
)
def test_bad_private_key_pem(data, message):
    with pytest.raises(PrivateKeyError) as info:
        load_private_key_pem(data)
    assert message in info.value.reason
    assert "\n" not in str(info.value)


def test_encrypted_private_key_is_refused():
    pem = generate_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(PrivateKeyError, match="encrypted"):
        load_private_key_pem(pem)


def test_unsupported_private_key_type_is_refused():
    pem = dsa.generate_private_key(1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PrivateKeyError, match="unsupported private key type"):
        load_private_key_pem(pem)


def test_certificate_pem_round_trip_and_bundles(ed_ca):
    _, ca_cert = ed_ca
    _, other = create_ca("second")
    assert load_certificate_pem(certificate_pem(ca_cert)) == ca_cert
    bundle = certificate_pem(ca_cert) + b"\n" + certificate_pem(other)
    assert load_certificates_pem(bundle) == [ca_cert, other]
    assert load_certificate_pem(bundle) == ca_cert


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no PEM certificate"),
        (b"hello", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed PEM certificate"),
    ],
)
def test_bad_certificate_pem(data, message):
    with pytest.raises(CertificateError) as info:
        load_certificates_pem(data)
    assert message in info.value.reason
    assert "\n" not in str(info.value)


def test_ed25519_is_the_default_key_type(ed_ca):
    key, _ = issue_certificate(*ed_ca, "n")
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert isinstance(ed_ca[0], ed25519.Ed25519PrivateKey)
