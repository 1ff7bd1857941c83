"""The CA directory on disk (nmc.ops.pki)."""

from __future__ import annotations

import datetime as dt
import stat

import pytest

from nmc.ops import pki
from nmc.security import (
    Signer,
    Verifier,
    certificate_name,
    certificate_roles,
    load_certificate_pem,
    load_private_key_pem,
)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca_dir(tmp_path):
    directory = tmp_path / "ca"
    pki.init_ca(directory)
    return directory


def test_init_writes_certificate_and_secret_key(tmp_path):
    paths = pki.init_ca(tmp_path / "ca", common_name="Test CA")
    assert paths == pki.CAPaths(tmp_path / "ca", tmp_path / "ca" / "ca.pem", tmp_path / "ca" / "ca.key")
    assert certificate_name(load_certificate_pem(paths.certificate.read_bytes())) == "Test CA"
    assert _mode(paths.key) == 0o600
    assert load_private_key_pem(paths.key.read_bytes())
    assert not list(paths.directory.glob(".*tmp*"))


def test_init_refuses_to_overwrite_an_existing_ca(ca_dir):
    before = (ca_dir / "ca.pem").read_bytes()
    with pytest.raises(pki.PKIExistsError) as info:
        pki.init_ca(ca_dir)
    assert "a CA already exists" in info.value.reason
    assert info.value.path == ca_dir / "ca.pem"
    assert (ca_dir / "ca.pem").read_bytes() == before


def test_init_refuses_when_only_the_key_is_left(tmp_path):
    pki.init_ca(tmp_path)
    (tmp_path / "ca.pem").unlink()
    with pytest.raises(pki.PKIExistsError, match=r"\(ca.key\)"):
        pki.init_ca(tmp_path)


def test_init_force_replaces_the_ca(ca_dir):
    before = (ca_dir / "ca.pem").read_bytes()
    pki.init_ca(ca_dir, force=True)
    assert (ca_dir / "ca.pem").read_bytes() != before
    assert _mode(ca_dir / "ca.key") == 0o600


def test_init_rejects_unknown_key_type(tmp_path):
    with pytest.raises(pki.PKIError, match="unknown key type 'dsa'"):
        pki.init_ca(tmp_path, key_type="dsa")  # type: ignore[arg-type]


def test_issued_certificate_chains_to_the_ca_and_signs(ca_dir):
    paths = pki.issue(ca_dir, "alice", roles=("ops", "web"))
    assert paths == pki.IssuedPaths("alice", ca_dir / "certs" / "alice.pem", ca_dir / "private" / "alice.key")
    assert _mode(paths.key) == 0o600
    assert _mode(paths.key.parent) == 0o700
    signer = Signer.from_pem(paths.certificate.read_bytes(), paths.key.read_bytes())
    verifier = Verifier.from_pem((ca_dir / "ca.pem").read_bytes())
    assert verifier.verify(b"body", signer.sign(b"body"), signer.certificate_b64) == "alice"
    assert certificate_roles(signer.certificate) == ("ops", "web")


def test_issue_with_options(ca_dir):
    pki.issue(ca_dir, "broker", key_type="ecdsa-p256", days=2, server=True)
    info = pki.describe(ca_dir, "broker")
    assert info.key_type == "ecdsa-secp256r1"
    assert "IPAddress:127.0.0.1" in info.alt_names
    assert dt.timedelta(days=1) < info.not_after - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=2)


def test_issue_without_a_ca_says_how_to_make_one(tmp_path):
    with pytest.raises(pki.PKIError) as info:
        pki.issue(tmp_path / "nothing", "alice")
    assert "no CA certificate at" in info.value.reason
    assert "nmc ops ca init" in info.value.reason
    assert not (tmp_path / "nothing").exists()


def test_issue_refuses_to_overwrite_unless_forced(ca_dir):
    first = pki.issue(ca_dir, "alice").certificate.read_bytes()
    with pytest.raises(pki.PKIExistsError, match="a certificate for 'alice' already exists"):
        pki.issue(ca_dir, "alice")
    assert (ca_dir / "certs" / "alice.pem").read_bytes() == first
    pki.issue(ca_dir, "alice", force=True)
    assert (ca_dir / "certs" / "alice.pem").read_bytes() != first


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "-flag", "a" * 65, "with space", "tab\t", "ü"])
def test_invalid_names_are_refused(ca_dir, name):
    with pytest.raises(pki.PKIError) as info:
        pki.issue(ca_dir, name)
    assert "invalid certificate name" in info.value.reason
    assert "\n" not in info.value.reason
    assert not (ca_dir / "certs").exists()


@pytest.mark.parametrize("name", ["alice", "web1.example.com", "bob@example.com", "node_7", "A-1"])
def test_valid_names(name):
    assert pki.validate_name(name) == name


@pytest.mark.parametrize("role", ["", "a,b", "x=y", "a b"])
def test_invalid_roles_are_refused(ca_dir, role):
    with pytest.raises(pki.PKIError, match="invalid role"):
        pki.issue(ca_dir, "alice", roles=[role])


def test_invalid_days_are_refused(ca_dir):
    with pytest.raises(pki.PKIError, match="days must be"):
        pki.issue(ca_dir, "alice", days=0)


def test_corrupt_ca_files_give_one_line_errors(ca_dir):
    (ca_dir / "ca.key").write_bytes(b"garbage")
    with pytest.raises(pki.PKIError) as info:
        pki.issue(ca_dir, "alice")
    assert info.value.reason.startswith(f"{ca_dir / 'ca.key'}: no PEM private key")
    (ca_dir / "ca.pem").write_bytes(b"garbage")
    with pytest.raises(pki.PKIError, match="no PEM certificate"):
        pki.load_ca(ca_dir)


def test_ca_key_that_does_not_match_the_certificate(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    pki.init_ca(first)
    pki.init_ca(second)
    (first / "ca.key").write_bytes((second / "ca.key").read_bytes())
    with pytest.raises(pki.PKIError, match="does not match the CA certificate"):
        pki.issue(first, "alice")


def test_describe_ca_and_issued(ca_dir):
    pki.issue(ca_dir, "web1", roles=["web"])
    pki.issue(ca_dir, "alice")
    ca_info = pki.describe(ca_dir)
    assert (ca_info.name, ca_info.is_ca, ca_info.status()) == ("nmc fleet CA", True, "valid")
    info = pki.describe(ca_dir, "web1")
    assert (info.name, info.roles, info.issuer, info.is_ca) == ("web1", ("web",), "CN=nmc fleet CA", False)
    assert info.path == ca_dir / "certs" / "web1.pem"
    assert info.status(info.not_after + dt.timedelta(seconds=1)) == "expired"
    assert info.status(info.not_before - dt.timedelta(seconds=1)) == "not yet valid"
    document = info.to_dict()
    assert document["not_after"] == info.not_after.isoformat()
    assert document["roles"] == ["web"]
    assert pki.issued_names(ca_dir) == ["alice", "web1"]


def test_describe_missing_certificate(ca_dir):
    with pytest.raises(pki.PKIError, match="no certificate for 'bob' at"):
        pki.describe(ca_dir, "bob")
    with pytest.raises(pki.PKIError, match="invalid certificate name"):
        pki.describe(ca_dir, "../ca")


def test_issued_names_of_an_empty_directory(tmp_path):
    assert pki.issued_names(tmp_path) == []
