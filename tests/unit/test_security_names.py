"""Certificate names outside the signature: broker user, inbox, allowed patterns (nmc.security.names)."""

from __future__ import annotations

import ssl

import pytest

from nmc.security import (
    CertificateError,
    Signer,
    Verifier,
    create_ca,
    issue_certificate,
)
from nmc.security.names import (
    NamePolicy,
    inbox_prefix,
    nats_user,
    tls_identity,
    with_tls_identity,
)


@pytest.fixture(scope="module")
def ca():
    return create_ca()


def test_inbox_prefix_encodes_the_name_as_one_token():
    assert inbox_prefix("alice") == "_INBOX.alice"
    assert inbox_prefix("web1.example.com") == "_INBOX.web1%2Eexample%2Ecom"
    assert inbox_prefix("a>b *") == "_INBOX.a%3Eb%20%2A"


def test_nats_user_prefers_email_then_dns_then_subject(ca):
    assert nats_user(issue_certificate(*ca, "carol@example.com")[1]) == "carol@example.com"
    assert nats_user(issue_certificate(*ca, "web1.example.com", roles=("node",))[1]) == "web1.example.com"


def test_tls_identity_marks_a_context():
    ctx = ssl.create_default_context()
    assert tls_identity(ctx) is None and tls_identity(None) is None
    assert tls_identity(with_tls_identity(ctx, "alice")) == "alice"


def test_name_policy_parses_comma_lists_and_checks_each_role():
    policy = NamePolicy.from_settings({"user": "*.users, ops-*", "node": "*.example.com", "audit": " "})
    assert dict(policy.patterns) == {"user": ("*.users", "ops-*"), "node": ("*.example.com",)}
    assert policy.violation("alice.users", ["user"]) is None
    assert policy.violation("ops-bob", ["user", "other"]) is None
    assert policy.violation("anything", []) is None
    assert policy.violation("web1.example.com", ["user"]) == (
        "certificate name 'web1.example.com' is not allowed for role 'user' (allowed: *.users, ops-*)")
    assert policy.violation("alice.users", ["user", "node"]) is not None, "every restricted role must allow it"
    assert not NamePolicy() and policy
    with pytest.raises(ValueError, match="no name patterns"):
        NamePolicy({"user": ""})


def test_verifier_refuses_names_outside_their_roles_patterns(ca):
    policy = NamePolicy({"user": ("*.users",)})
    verifier = Verifier([ca[1]], names=policy)
    body = b"{}"
    good = Signer(*issue_certificate(*ca, "alice.users", roles=("user",)))
    assert verifier.verify(body, good.sign(body), good.certificate_b64) == "alice.users"
    node = Signer(*issue_certificate(*ca, "web1", roles=("node",)))  # role without patterns: free
    assert verifier.verify(body, node.sign(body), node.certificate_b64) == "web1"
    bad = Signer(*issue_certificate(*ca, "mallory", roles=("user", "ops")))
    with pytest.raises(CertificateError, match="certificate name 'mallory' is not allowed for role 'user'"):
        verifier.verify(body, bad.sign(body), bad.certificate_b64)
    foreign = Signer(*issue_certificate(*create_ca(), "mallory", roles=("user",)))
    with pytest.raises(CertificateError, match="not signed by a trusted CA"):
        verifier.verify(body, foreign.sign(body), foreign.certificate_b64)
