"""Certificate lifecycle on disk and on the command line: rotate, revoke, CRL, broker config, client settings."""

from __future__ import annotations

import pytest
import structlog
from click.testing import CliRunner
from cryptography import x509

from nmc.cli.main import cli
from nmc.ops import pki
from nmc.ops.config.files import load_config
from nmc.ops.daemon.serve import build_node
from nmc.ops.config.settings import SettingsError, crl_path, crl_warning, load_verifier, tls_context
from nmc.security import CertificateError, Signer, load_certificate_pem
from nmc.security.names import tls_identity


@pytest.fixture
def ca_dir(tmp_path):
    directory = tmp_path / "ca"
    pki.init_ca(directory)
    return directory


def _serial(path) -> int:
    return load_certificate_pem(path.read_bytes()).serial_number


def test_issue_force_archives_the_replaced_certificate(ca_dir):
    first = pki.issue(ca_dir, "alice", roles=("user",))
    old_serial = _serial(first.certificate)
    pki.issue(ca_dir, "alice", roles=("user",), force=True)
    assert (ca_dir / "old" / f"alice.{old_serial:x}.pem").exists()
    assert _serial(first.certificate) != old_serial
    assert len(pki.issued_certificates(ca_dir)) == 2 and len(pki.issued_certificates(ca_dir, archived=False)) == 1


def test_revoke_current_then_archived_and_refuse_unknown(ca_dir):
    paths = pki.issue(ca_dir, "alice", roles=("user",))
    first = _serial(paths.certificate)
    pki.issue(ca_dir, "alice", roles=("user",), force=True)
    second = _serial(paths.certificate)

    done = pki.revoke(ca_dir, "alice", serial=first, reason="superseded")
    assert (done.serial, done.entries, done.already) == (first, 1, False)
    assert paths.certificate.exists(), "revoking an archived serial leaves the current certificate alone"
    done = pki.revoke(ca_dir, "alice", reason="keyCompromise")
    assert (done.serial, done.entries) == (second, 2)
    assert not paths.certificate.exists() and (ca_dir / "old" / f"alice.{second:x}.pem").exists()
    assert {(r.serial, r.reason) for r in pki.revoked(ca_dir)} == {(first, "superseded"), (second, "keyCompromise")}
    assert pki.revoke(ca_dir, "alice", serial=first).already

    with pytest.raises(pki.PKIError, match="no current certificate for 'alice'"):
        pki.revoke(ca_dir, "alice")
    with pytest.raises(pki.PKIError, match="has no certificate with serial 1 "):
        pki.revoke(ca_dir, "alice", serial=1)
    pki.issue(ca_dir, "alice", roles=("user",))  # no --force needed after a revocation


def test_crl_numbers_increase_and_a_new_ca_drops_the_old_crl(ca_dir):
    pki.write_crl(ca_dir)
    pki.write_crl(ca_dir)
    crl = x509.load_pem_x509_crl(pki.crl_path(ca_dir).read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    pki.issue(ca_dir, "alice")
    pki.issue(ca_dir, "alice", force=True)
    pki.init_ca(ca_dir, force=True)
    assert not pki.crl_path(ca_dir).exists() and not (ca_dir / "old").exists()
    assert pki.revoked(ca_dir) == []


def test_cli_revoke_crl_and_show(ca_dir):
    runner = CliRunner()
    args = ["--dir", str(ca_dir)]
    assert runner.invoke(cli, ["ops", "ca", "issue", "alice", "--role", "user", *args]).exit_code == 0
    rotated = runner.invoke(cli, ["ops", "ca", "issue", "alice", "--role", "user", "--force", *args])
    assert rotated.exit_code == 0 and "still valid until you run `nmc ops ca revoke alice --serial" in rotated.output
    old = rotated.output.split("--serial ")[1].split("`")[0]
    out = runner.invoke(cli, ["ops", "ca", "revoke", "alice", "--serial", old, "--reason", "superseded", *args])
    assert out.exit_code == 0, out.output
    assert f"Certificate for 'alice' (serial {old}) revoked (superseded)" in out.output
    assert "1 revoked" in out.output
    shown = runner.invoke(cli, ["ops", "ca", "show", "alice", *args])
    assert "status:" in shown.output and "revoked" not in shown.output.split("status:")[1].splitlines()[0]
    bad = runner.invoke(cli, ["ops", "ca", "revoke", "alice", "--serial", "zz", *args])
    assert bad.exit_code != 0 and "not a hexadecimal serial" in bad.output
    crl = runner.invoke(cli, ["ops", "ca", "crl", "--days", "7", *args])
    assert crl.exit_code == 0 and "1 revoked certificate(s), next update in 7 days" in crl.output


def test_cli_broker_config_renders_users_and_says_who_was_left_out(ca_dir, tmp_path):
    pki.issue(ca_dir, "alice", roles=("user",))
    pki.issue(ca_dir, "web1", roles=("node",))
    pki.issue(ca_dir, "nobody", roles=("ops",))
    out = tmp_path / "nats.conf"
    result = CliRunner().invoke(cli, ["ops", "broker", "config", "--ca-dir", str(ca_dir), "--collective", "prod",
                                      "-o", str(out), "--port", "4333"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert 'listen: "127.0.0.1:4333"' in text and "verify_and_map: true" in text and "pinned_certs" in text
    assert '"nmc.prod.all.>"' in text and (ca_dir / "certs" / "broker.pem").exists()
    assert "2 certificate user(s): alice (user), web1 (node)" in result.output
    assert "left out: nobody: no broker role" in result.output
    printed = CliRunner().invoke(cli, ["ops", "broker", "--tls", "--ca-dir", str(ca_dir), "--print-config"])
    assert printed.exit_code == 0 and 'user: "alice"' in printed.output
    missing = CliRunner().invoke(cli, ["ops", "broker", "config", "--ca-dir", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "nmc ops ca init" in missing.output
    bad = CliRunner().invoke(cli, ["ops", "broker", "config", "--ca-dir", str(ca_dir), "--role-pattern", "root=*"])
    assert bad.exit_code == 2 and "ROLE=GLOB" in bad.output


def _client(tmp_path, ca_dir, **values):
    paths = pki.issued_paths(ca_dir, "alice")
    if not paths.certificate.exists():
        pki.issue(ca_dir, "alice", roles=("user",))
    base = {"plugin.security.ca_file": ca_dir / "ca.pem", "plugin.security.cert_file": paths.certificate,
            "plugin.security.key_file": paths.key, **values}
    cfg = tmp_path / "client.cfg"
    cfg.write_text("".join(f"{k} = {v}\n" for k, v in base.items()))
    return load_config(cfg, kind="client", env={})


def test_tls_url_falls_back_to_the_signing_certificate(ca_dir, tmp_path):
    assert tls_context(_client(tmp_path, ca_dir, **{"plugin.nats.servers": "nats://127.0.0.1:4222"})) is None
    ctx = tls_context(_client(tmp_path, ca_dir, **{"plugin.nats.servers": "tls://127.0.0.1:4222"}))
    assert ctx is not None and tls_identity(ctx) == "alice"


def test_verifier_from_config_reads_crl_and_name_patterns(ca_dir, tmp_path):
    crl, _ = pki.write_crl(ca_dir)
    config = _client(tmp_path, ca_dir, **{"plugin.security.crl_file": crl,
                                          "plugin.security.allowed_names.user": "*.users"})
    verifier = load_verifier(config)
    alice = Signer.from_pem(pki.issued_paths(ca_dir, "alice").certificate.read_bytes(),
                            pki.issued_paths(ca_dir, "alice").key.read_bytes())
    with pytest.raises(CertificateError, match="not allowed for role 'user'"):
        verifier.verify(b"x", alice.sign(b"x"), alice.certificate_b64)
    missing = _client(tmp_path, ca_dir, **{"plugin.security.crl_file": tmp_path / "nope.pem"})
    with pytest.raises(SettingsError, match="plugin.security.crl_file = .*nope.pem: file not found"):
        load_verifier(missing)


def test_the_cas_crl_is_read_by_default_and_watched_before_it_exists(ca_dir, tmp_path):
    config = _client(tmp_path, ca_dir, **{"plugin.security.crl_check_interval": "0"})
    assert crl_path(config) == (ca_dir / "crl.pem", False)
    assert "crl.pem does not exist" in (crl_warning(config) or "")
    verifier = load_verifier(config)  # no crl.pem yet: starts anyway
    alice = Signer.from_pem(pki.issued_paths(ca_dir, "alice").certificate.read_bytes(),
                            pki.issued_paths(ca_dir, "alice").key.read_bytes())
    assert verifier.verify(b"x", alice.sign(b"x"), alice.certificate_b64) == "alice"
    pki.revoke(ca_dir, "alice", reason="keyCompromise")  # writes ca_dir/crl.pem after the verifier was made
    with pytest.raises(CertificateError, match="is revoked"):
        verifier.verify(b"x", alice.sign(b"x"), alice.certificate_b64)
    assert crl_warning(config) is None
    explicit = _client(tmp_path, ca_dir, **{"plugin.security.crl_file": ca_dir / "crl.pem"})
    assert crl_path(explicit) == (ca_dir / "crl.pem", True) and crl_warning(explicit) is None


async def test_a_node_without_any_crl_says_so_at_start(ca_dir, tmp_path):
    pki.issue(ca_dir, "web1.test", roles=("node",))
    paths = pki.issued_paths(ca_dir, "web1.test")
    cfg = tmp_path / "server.cfg"
    cfg.write_text(f"identity = web1.test\nplugin.security.ca_file = {ca_dir / 'ca.pem'}\n"
                   f"plugin.security.cert_file = {paths.certificate}\nplugin.security.key_file = {paths.key}\n"
                   "factsource = builtin\nregisterinterval = 0\naudit.enabled = false\n")
    with structlog.testing.capture_logs() as logs:
        await build_node(load_config(cfg, kind="server", env={}))
    [warning] = [e for e in logs if e["event"] == "crl_missing"]
    assert warning["log_level"] == "warning" and warning["identity"] == "web1.test"
    assert f"{ca_dir / 'crl.pem'} does not exist" in warning["message"]
    pki.write_crl(ca_dir)
    with structlog.testing.capture_logs() as logs:
        await build_node(load_config(cfg, kind="server", env={}))
    assert not [e for e in logs if e["event"] == "crl_missing"]
