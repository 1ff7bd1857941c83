"""nmc.audit.verify: only a record signed by the node it names, on that node's subject, is genuine."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from nmc.audit.errors import AuditRecordError, AuditRecordRefused
from nmc.audit.records import encode_record
from nmc.audit.verify import RecordVerifier
from nmc.protocol.audit import AuditRecord
from nmc.protocol.subjects import audit_subject
from nmc.security import Signer, Verifier, create_ca, issue_certificate
from nmc.security.crl import Revocation, RevocationList, build_crl

CA = create_ca()


def signer(name: str, *roles: str, **kw) -> Signer:
    return Signer(*issue_certificate(*CA, name, roles=roles, **kw))


WEB1, WEB2, ALICE, PUPPET = signer("web1", "node"), signer("web2", "node"), signer("alice", "user"), signer("web3")


def record(identity: str = "web1", **kw) -> AuditRecord:
    fields = dict(phase="decision", request_id="r1", request_time=1.0, caller="cert=alice", sender="s",
                  identity=identity, collective="c", agent="rpcutil", action="ping", time=1764072000.0)
    return AuditRecord(**(fields | kw))


def check(by: Signer | None, rec: AuditRecord, subject: str | None = None, verifier: RecordVerifier | None = None,
          body: bytes | None = None, **kw) -> dict:
    body = encode_record(rec) if body is None else body
    headers = by.headers(body) if by is not None else {}
    verifier = verifier or RecordVerifier(Verifier([CA[1]]))
    return verifier.check(subject or audit_subject(rec.collective, rec.identity), body, headers, **kw)


def refusal(*args, **kw) -> str:
    with pytest.raises(AuditRecordRefused) as info:
        check(*args, **kw)
    assert info.value.record["identity"]  # what it claimed, for `nmc audit --unverified`
    return info.value.reason


def test_a_record_signed_by_its_node_on_its_subject_is_genuine() -> None:
    rec = record()
    assert check(WEB1, rec) == rec.to_dict()


def test_what_is_not_genuine_is_refused_with_the_reason() -> None:
    assert "missing Nmc-Signature" in refusal(None, record())
    assert "claims node 'web1' but is signed by 'web2'" in refusal(WEB2, record())
    assert "record of 'web2' on the audit subject of 'web1'" in refusal(WEB2, record("web2"), audit_subject("c", "web1"))
    assert "collective 'c' on the audit subject of collective 'd'" in refusal(WEB1, record(), audit_subject("d", "web1"))
    assert "not an nmc audit subject" in refusal(WEB1, record(), "nmc.c.node.web1.rpcutil.ping")
    assert "'alice', which is not a node: it has user" in refusal(ALICE, record("alice"))
    assert "no role (see audit.node_names)" in refusal(PUPPET, record("web3"))
    tampered = encode_record(record())
    headers = WEB1.headers(tampered)
    with pytest.raises(AuditRecordRefused, match="signature"):
        RecordVerifier(Verifier([CA[1]])).check(audit_subject("c", "web1"),
                                               tampered.replace(b'"allowed":true', b'"allowed":false'), headers)
    old = {k: v for k, v in record().to_dict().items() if k != "nonce"} | {"protocol": "nmc.audit.v1"}
    assert "unsigned nmc.audit.v1 record" in refusal(WEB1, record(), body=json.dumps(old).encode())


def test_a_record_that_is_no_record_is_an_error_not_a_refusal() -> None:
    with pytest.raises(AuditRecordError) as info:
        check(WEB1, record(), body=b'{"protocol":"nmc.audit.v2","x":NaN}')
    assert not isinstance(info.value, AuditRecordRefused)


def test_role_less_certificates_count_as_nodes_only_by_name() -> None:
    lenient = RecordVerifier(Verifier([CA[1]]), node_names=["web*"])
    assert check(PUPPET, record("web3"), verifier=lenient)["identity"] == "web3"
    assert "not a node" in refusal(ALICE, record("alice"), verifier=RecordVerifier(Verifier([CA[1]]), node_names=["*"]))
    with pytest.raises(ValueError):
        RecordVerifier(Verifier([CA[1]]), node_names=[" "])


def test_revoked_and_foreign_signers_are_refused() -> None:
    when = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    crl = build_crl(*CA, [Revocation(WEB1.certificate.serial_number, when, "keyCompromise")])
    revoking = RecordVerifier(Verifier([CA[1]], revocations=RevocationList([crl], [CA[1]])))
    assert "is revoked" in refusal(WEB1, record(), verifier=revoking)
    stranger = Signer(*issue_certificate(*create_ca(), "web1", roles=("node",)))
    assert "not signed by a trusted CA" in refusal(stranger, record())


def test_the_certificate_must_have_been_valid_when_the_record_was_stored() -> None:
    short = signer("web1", "node", days=1)
    stored = short.certificate.not_valid_before_utc.timestamp() + 3600
    assert check(short, record(), now=stored)["identity"] == "web1"  # read back long after it expired: still good
    assert "expired" in refusal(short, record(), now=stored + 3 * 86400)
