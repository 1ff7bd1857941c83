"""Signing bodies and verifying them against the fleet CA (nmc.security.signing)."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

import nmc.security.signing as signing_module
from nmc.security import (
    CERTIFICATE_HEADER,
    SIGNATURE_HEADER,
    CallerMismatchError,
    CertificateError,
    ClockSkewError,
    PrivateKeyError,
    ReplayError,
    SecurityError,
    SignatureError,
    Signer,
    Verifier,
    certificate_pem,
    check_caller,
    check_time,
    create_ca,
    generate_key,
    issue_certificate,
    private_key_pem,
    sign_bytes,
)

UTC = dt.timezone.utc
BODY = b'{"protocol":"nmc.request.v1","id":"r1","caller":"cert=alice","time":1764072000.0,"ttl":60}'


@pytest.fixture(scope="module")
def rsa_leaf_key():
    return generate_key("rsa")


@pytest.fixture(scope="module")
def cas():
    """One Ed25519 CA and one RSA CA, made once for the module."""
    return {"ed25519": create_ca(), "rsa": create_ca("rsa CA", key_type="rsa")}


@pytest.fixture(scope="module")
def ed_ca(cas):
    return cas["ed25519"]


@pytest.fixture(scope="module")
def alice(ed_ca):
    return Signer(*issue_certificate(*ed_ca, "alice"))


@pytest.fixture(scope="module")
def verifier(ed_ca):
    return Verifier([ed_ca[1]])


def _signer_for(ca, name, key_type, rsa_leaf_key, **kwargs):
    key = rsa_leaf_key if key_type == "rsa" else None
    return Signer(*issue_certificate(*ca, name, key_type=key_type, key=key, **kwargs))


@pytest.mark.parametrize("ca_type", ["ed25519", "rsa"])
@pytest.mark.parametrize("key_type", ["ed25519", "rsa", "ecdsa-p256"])
def test_round_trip_for_every_key_and_ca_type(cas, ca_type, key_type, rsa_leaf_key):
    signer = _signer_for(cas[ca_type], "alice", key_type, rsa_leaf_key)
    verifier = Verifier([cas[ca_type][1]])
    headers = signer.headers(BODY)
    assert set(headers) == {SIGNATURE_HEADER, CERTIFICATE_HEADER}
    assert verifier.verify(BODY, headers[SIGNATURE_HEADER], headers[CERTIFICATE_HEADER]) == "alice"
    # Second sight of the same certificate takes the cached path: same answer.
    assert verifier.verify(BODY, signer.sign(BODY), signer.certificate_b64) == "alice"


@pytest.mark.parametrize("key_type", ["ed25519", "rsa", "ecdsa-p256"])
def test_tampered_body_is_refused(ed_ca, verifier, key_type, rsa_leaf_key):
    signer = _signer_for(ed_ca, "alice", key_type, rsa_leaf_key)
    headers = signer.headers(BODY)
    tampered = BODY.replace(b"r1", b"r2")
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(tampered, headers[SIGNATURE_HEADER], headers[CERTIFICATE_HEADER])


def test_signature_by_another_key_with_the_right_certificate(alice, verifier):
    forged = base64.b64encode(sign_bytes(generate_key(), BODY)).decode()
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(BODY, forged, alice.certificate_b64)


def test_signature_presented_with_someone_elses_certificate(ed_ca, alice, verifier):
    bob = Signer(*issue_certificate(*ed_ca, "bob"))
    with pytest.raises(SignatureError):
        verifier.verify(BODY, alice.sign(BODY), bob.certificate_b64)


def test_certificate_from_another_ca_with_the_same_name_is_refused(verifier):
    # Every default CA is called "nmc fleet CA": only the CA signature tells them apart.
    foreign = Signer(*issue_certificate(*create_ca(), "alice"))
    with pytest.raises(CertificateError, match="not signed by a trusted CA"):
        verifier.verify(BODY, foreign.sign(BODY), foreign.certificate_b64)


def test_certificate_from_a_differently_named_ca_is_refused(cas, verifier):
    foreign = Signer(*issue_certificate(*cas["rsa"], "alice"))
    with pytest.raises(CertificateError, match="issued by 'CN=rsa CA', not a trusted CA"):
        verifier.verify(BODY, foreign.sign(BODY), foreign.certificate_b64)


def test_foreign_certificate_stays_refused_on_repeat(verifier):
    foreign = Signer(*issue_certificate(*create_ca(), "mallory"))
    headers = foreign.headers(BODY)
    for _ in range(2):
        with pytest.raises(CertificateError):
            verifier.verify(BODY, headers[SIGNATURE_HEADER], headers[CERTIFICATE_HEADER])


def test_bundle_of_cas_trusts_each(cas):
    verifier = Verifier.from_pem(certificate_pem(cas["ed25519"][1]) + certificate_pem(cas["rsa"][1]))
    for ca in cas.values():
        signer = Signer(*issue_certificate(*ca, "node"))
        assert verifier.verify(BODY, signer.sign(BODY), signer.certificate_b64) == "node"


def test_expired_and_not_yet_valid_certificates(ed_ca, verifier):
    start = dt.datetime(2030, 1, 1, tzinfo=UTC)
    end = dt.datetime(2030, 2, 1, tzinfo=UTC)
    signer = Signer(*issue_certificate(*ed_ca, "alice", not_before=start, not_after=end))
    signature = signer.sign(BODY)
    inside = (start + dt.timedelta(days=1)).timestamp()
    assert verifier.verify(BODY, signature, signer.certificate_b64, now=inside) == "alice"
    # The certificate is now cached as chaining to the CA; validity must still be checked.
    with pytest.raises(CertificateError, match="'alice' expired at 2030-02-01T00:00:00"):
        verifier.verify(BODY, signature, signer.certificate_b64, now=end.timestamp() + 1)
    with pytest.raises(CertificateError, match="'alice' is not valid until 2030-01-01T00:00:00"):
        verifier.verify(BODY, signature, signer.certificate_b64, now=start.timestamp() - 1)


def test_expired_certificate_refused_on_first_sight(ed_ca):
    past = dt.datetime(2001, 1, 1, tzinfo=UTC)
    signer = Signer(*issue_certificate(*ed_ca, "old", not_before=past, days=1))
    with pytest.raises(CertificateError, match="expired"):
        Verifier([ed_ca[1]]).verify(BODY, signer.sign(BODY), signer.certificate_b64)


def test_certificate_issued_by_an_expired_ca_is_refused():
    ca_start = dt.datetime(2030, 1, 1, tzinfo=UTC)
    ca = create_ca(days=10, now=ca_start)
    signer = Signer(*issue_certificate(*ca, "alice", not_before=ca_start, days=365))
    verifier = Verifier([ca[1]])
    assert verifier.verify(BODY, signer.sign(BODY), signer.certificate_b64, now=ca_start.timestamp() + 60) == "alice"
    with pytest.raises(CertificateError, match="CA certificate 'CN=nmc fleet CA' is outside its validity"):
        verifier.verify(BODY, signer.sign(BODY), signer.certificate_b64, now=ca_start.timestamp() + 20 * 86400)


def test_chain_is_checked_once_per_certificate(alice, ed_ca, monkeypatch):
    verifier = Verifier([ed_ca[1]])
    decoded = []
    real = signing_module._decode_certificate
    monkeypatch.setattr(signing_module, "_decode_certificate", lambda b64: decoded.append(b64) or real(b64))
    for _ in range(3):
        verifier.verify(BODY, alice.sign(BODY), alice.certificate_b64)
    assert decoded == [alice.certificate_b64]


def test_small_cache_still_verifies_everything(ed_ca):
    verifier = Verifier([ed_ca[1]], cache_size=1)
    signers = [Signer(*issue_certificate(*ed_ca, f"n{i}")) for i in range(3)]
    for signer in signers + signers:
        assert verifier.verify(BODY, signer.sign(BODY), signer.certificate_b64) == signer.name


@pytest.mark.parametrize(
    ("signature", "certificate", "error", "message"),
    [
        (None, "CERT", SignatureError, "missing Nmc-Signature header"),
        ("", "CERT", SignatureError, "missing Nmc-Signature header"),
        ("SIG", None, CertificateError, "missing Nmc-Certificate header"),
        ("SIG", "", CertificateError, "missing Nmc-Certificate header"),
        ("SIG", "%%% not base64 %%%", CertificateError, "Nmc-Certificate header is not valid base64"),
        ("SIG", "ünïcode", CertificateError, "Nmc-Certificate header is not valid base64"),
        ("SIG", base64.b64encode(b"junk").decode(), CertificateError, "not a DER X.509 certificate"),
        ("%%%", "CERT", SignatureError, "Nmc-Signature header is not valid base64"),
        (base64.b64encode(b"short").decode(), "CERT", SignatureError, "does not verify"),
    ],
)
def test_garbage_headers_give_one_line_reasons(alice, verifier, signature, certificate, error, message):
    if signature == "SIG":
        signature = alice.sign(BODY)
    if certificate == "CERT":
        certificate = alice.certificate_b64
    with pytest.raises(error) as info:
        verifier.verify(BODY, signature, certificate)
    assert message in str(info.value)
    assert str(info.value) == info.value.reason
    assert "\n" not in info.value.reason


@pytest.mark.parametrize("key_type", ["rsa", "ecdsa-p256"])
def test_garbage_signature_bytes_for_other_key_types(ed_ca, verifier, key_type, rsa_leaf_key):
    signer = _signer_for(ed_ca, "alice", key_type, rsa_leaf_key)
    with pytest.raises(SignatureError):
        verifier.verify(BODY, base64.b64encode(b"\x30\x06garbage").decode(), signer.certificate_b64)


def test_signer_properties(alice, ed_ca):
    assert alice.name == "alice"
    assert alice.caller == "cert=alice"
    der = base64.b64decode(alice.certificate_b64)
    assert der == alice.certificate.public_bytes(serialization.Encoding.DER)


def test_signer_from_pem(ed_ca, verifier):
    key, cert = issue_certificate(*ed_ca, "carol")
    signer = Signer.from_pem(certificate_pem(cert), private_key_pem(key))
    assert verifier.verify(BODY, signer.sign(BODY), signer.certificate_b64) == "carol"


def test_signer_refuses_a_key_that_does_not_match(ed_ca):
    _, cert = issue_certificate(*ed_ca, "dave")
    with pytest.raises(CertificateError, match="does not match certificate 'dave'"):
        Signer(generate_key(), cert)


def test_verifier_needs_a_ca():
    with pytest.raises(CertificateError, match="no CA certificates"):
        Verifier([])
    with pytest.raises(CertificateError, match="no PEM certificate"):
        Verifier.from_pem(b"")


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=2048))
def test_any_body_round_trips(alice, verifier, body):
    assert verifier.verify(body, alice.sign(body), alice.certificate_b64) == "alice"


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=256), other=st.binary(max_size=256))
def test_signature_binds_the_exact_bytes(alice, verifier, body, other):
    signature = alice.sign(body)
    if other == body:
        assert verifier.verify(other, signature, alice.certificate_b64) == "alice"
    else:
        with pytest.raises(SignatureError):
            verifier.verify(other, signature, alice.certificate_b64)


def test_check_caller():
    check_caller("cert=alice", "alice")
    with pytest.raises(CallerMismatchError) as info:
        check_caller("cert=bob", "alice")
    assert str(info.value) == "caller 'cert=bob' does not match certificate 'alice'"
    assert (info.value.caller, info.value.name) == ("cert=bob", "alice")
    with pytest.raises(CallerMismatchError):
        check_caller("alice", "alice")


def test_check_time_accepts_within_ttl_both_ways():
    now = 1_764_072_000.0
    for offset in (-60.0, -1.0, 0.0, 1.0, 60.0):
        check_time(now + offset, 60, now)


def test_check_time_refuses_requests_from_the_future():
    with pytest.raises(ClockSkewError) as info:
        check_time(1075.0, 60, 1000.0)
    assert str(info.value) == "request time is 75.0s in the future (ttl 60s): clock skew?"
    assert (info.value.offset, info.value.ttl) == (75.0, 60)


def test_check_time_refuses_old_requests():
    with pytest.raises(ClockSkewError) as info:
        check_time(900.0, 60, 1000.0)
    assert "100.0s old (ttl 60s)" in str(info.value)
    assert "clock skew" in str(info.value)
    assert info.value.offset == -100.0


@pytest.mark.parametrize("offset", [-60.001, 60.001])
def test_check_time_refuses_just_outside_ttl(offset):
    with pytest.raises(ClockSkewError, match="clock skew"):
        check_time(1000.0 + offset, 60, 1000.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1000", None])
def test_check_time_refuses_non_numbers(bad):
    with pytest.raises(ClockSkewError, match="finite numbers"):
        check_time(bad, 60, 1000.0)  # type: ignore[arg-type]


def test_every_refusal_is_a_security_error():
    for error in (CertificateError, PrivateKeyError, SignatureError, CallerMismatchError, ClockSkewError, ReplayError):
        assert issubclass(error, SecurityError)


def test_verify_uses_the_current_time_by_default(ed_ca, verifier):
    # A certificate that expired a second ago must fail without passing `now`.
    now = dt.datetime.fromtimestamp(time.time(), UTC)
    key, cert = issue_certificate(
        *ed_ca, "brief", not_before=now - dt.timedelta(days=1), not_after=now - dt.timedelta(seconds=1)
    )
    signer = Signer(key, cert)
    with pytest.raises(CertificateError, match="expired"):
        verifier.verify(BODY, signer.sign(BODY), signer.certificate_b64)
