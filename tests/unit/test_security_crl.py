"""Revocation lists (nmc.security.crl) and the Verifier honouring them."""

from __future__ import annotations

import datetime as dt

import pytest

from nmc.security import (
    CertificateError,
    Signer,
    Verifier,
    create_ca,
    issue_certificate,
)
from nmc.security.crl import (
    CrlFile,
    Revocation,
    RevocationList,
    build_crl,
    ca_fingerprint,
    crl_pem,
    crl_revocations,
    load_crls_pem,
)

UTC = dt.timezone.utc
WHEN = dt.datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca():
    return create_ca()


@pytest.fixture(scope="module")
def alice(ca):
    return Signer(*issue_certificate(*ca, "alice", roles=("user",)))


def _crl(ca, *entries, **kw):
    return crl_pem(build_crl(*ca, entries, **kw))


def test_crl_round_trips_entries_and_reasons(ca):
    data = _crl(ca, Revocation(7, WHEN, "keyCompromise"), Revocation(3, WHEN), number=4, now=WHEN)
    [crl] = load_crls_pem(data)
    assert crl_revocations(crl) == [Revocation(3, WHEN), Revocation(7, WHEN, "keyCompromise")]
    assert crl.next_update_utc == WHEN + dt.timedelta(days=30)
    table = RevocationList.from_pem(data, [ca[1]])
    assert len(table) == 2
    assert table.lookup(ca_fingerprint(ca[1]), 7).reason == "keyCompromise"
    assert table.lookup(ca_fingerprint(ca[1]), 8) is None
    assert table.lookup(b"another CA", 7) is None


def test_rsa_ca_signs_crls_too():
    rsa_ca = create_ca("rsa CA", key_type="rsa")
    table = RevocationList.from_pem(_crl(rsa_ca, Revocation(5, WHEN)), [rsa_ca[1]])
    assert table.lookup(ca_fingerprint(rsa_ca[1]), 5) is not None


def test_a_crl_signed_by_another_ca_is_refused(ca):
    impostor = create_ca()  # same default subject, other key
    with pytest.raises(CertificateError, match="not signed by a trusted CA"):
        RevocationList.from_pem(_crl(impostor, Revocation(1, WHEN)), [ca[1]])


@pytest.mark.parametrize("data, why", [(b"", "no PEM CRL"),
                                       (b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "malformed")])
def test_garbage_is_a_certificate_error(ca, data, why):
    with pytest.raises(CertificateError, match=why):
        RevocationList.from_pem(data, [ca[1]])


def test_unknown_reason_and_naive_time_are_refused():
    with pytest.raises(ValueError, match="unknown revocation reason"):
        Revocation(1, WHEN, "because")
    with pytest.raises(ValueError, match="aware"):
        Revocation(1, WHEN.replace(tzinfo=None))


def test_verifier_refuses_a_revoked_certificate_even_when_cached(ca, alice):
    body = b"{}"
    revoked = RevocationList.from_pem(_crl(ca, Revocation(alice.certificate.serial_number, WHEN, "keyCompromise")),
                                      [ca[1]])

    class Switch:
        table: RevocationList | None = None

        def lookup(self, fp, serial):
            return None if self.table is None else self.table.lookup(fp, serial)

    switch = Switch()
    verifier = Verifier([ca[1]], revocations=switch)
    assert verifier.verify(body, alice.sign(body), alice.certificate_b64) == "alice"  # now cached
    switch.table = revoked
    with pytest.raises(CertificateError) as refused:
        verifier.verify(body, alice.sign(body), alice.certificate_b64)
    assert refused.value.reason == (f"certificate 'alice' (serial {alice.certificate.serial_number:x}) is revoked: "
                                    f"revoked {WHEN.isoformat()} (keyCompromise)")


def test_crl_file_follows_its_file_and_keeps_the_last_good_list(ca, alice, tmp_path):
    path = tmp_path / "crl.pem"
    path.write_bytes(_crl(ca))
    source = CrlFile(path, [ca[1]], check_interval=0)
    fp, serial = ca_fingerprint(ca[1]), alice.certificate.serial_number
    assert source.lookup(fp, serial) is None

    path.write_bytes(_crl(ca, Revocation(serial, WHEN)))
    assert source.lookup(fp, serial) is not None and source.last_error is None

    path.write_bytes(b"garbage")
    assert source.lookup(fp, serial) is not None, "an invalid file leaves the last good list in force"
    assert "no PEM CRL" in (source.last_error or "")
    path.unlink()
    assert source.lookup(fp, serial) is not None
    assert "not found" in (source.last_error or "")
    path.write_bytes(_crl(ca))
    assert source.lookup(fp, serial) is None and source.last_error is None


def test_crl_file_checks_at_most_every_interval(ca, alice, tmp_path):
    path = tmp_path / "crl.pem"
    path.write_bytes(_crl(ca))
    source = CrlFile(path, [ca[1]], check_interval=3600)
    path.write_bytes(_crl(ca, Revocation(alice.certificate.serial_number, WHEN)))
    assert source.lookup(ca_fingerprint(ca[1]), alice.certificate.serial_number) is None  # not re-checked yet


def test_crl_file_must_exist_and_be_valid_at_start(ca, tmp_path):
    with pytest.raises(CertificateError, match="not found"):
        CrlFile(tmp_path / "missing.pem", [ca[1]])
    other = create_ca()
    (tmp_path / "foreign.pem").write_bytes(_crl(other))
    with pytest.raises(CertificateError, match="foreign.pem: CRL issued by 'CN=nmc fleet CA' is not signed"):
        CrlFile(tmp_path / "foreign.pem", [ca[1]])


def test_a_crl_file_that_may_be_missing_revokes_nothing_until_it_appears(ca, alice, tmp_path):
    path = tmp_path / "crl.pem"
    source = CrlFile(path, [ca[1]], check_interval=0, missing_ok=True)
    fp, serial = ca_fingerprint(ca[1]), alice.certificate.serial_number
    assert source.lookup(fp, serial) is None and source.last_error is None  # not there yet: no complaint
    path.write_bytes(_crl(ca, Revocation(serial, WHEN)))
    assert source.lookup(fp, serial) is not None, "a CRL written after start is picked up"
    path.unlink()
    assert source.lookup(fp, serial) is not None, "a CRL that disappears leaves the last list in force"
    other = create_ca()
    (tmp_path / "foreign.pem").write_bytes(_crl(other))
    with pytest.raises(CertificateError, match="not signed"):
        CrlFile(tmp_path / "foreign.pem", [ca[1]], missing_ok=True)  # present but invalid: still refused
