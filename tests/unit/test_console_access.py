"""Which client certificates the console admits (nmc.ops.console.access), certificates made in memory by our CA code."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization

from nmc.ops.console.access import AccessRefused, ClientCertificates, allow_list
from nmc.security import Verifier
from nmc.security.ca import create_ca, issue_certificate

CA_KEY, CA_CERT = create_ca()
DER = serialization.Encoding.DER


def der(name: str, *roles: str, **kw: dt.datetime) -> bytes:
    return issue_certificate(CA_KEY, CA_CERT, name, roles=roles, **kw)[1].public_bytes(DER)


def certs(*allow: str) -> ClientCertificates:
    return ClientCertificates(Verifier([CA_CERT]), frozenset(allow))


@pytest.mark.parametrize("roles", [("user",), ("auditor",), ("user", "auditor"), ("user", "ops")])
def test_a_persons_certificate_is_admitted(roles: tuple[str, ...]) -> None:
    assert certs().admit(der("alice", *roles)) == "alice"


@pytest.mark.parametrize("roles", [(), ("node",), ("service", "policy"), ("service", "audit"), ("console",),
                                   ("operator",), ("leaf",), ("broker",), ("user", "node"), ("ops",)])
def test_a_daemons_or_roleless_certificate_is_refused(roles: tuple[str, ...]) -> None:
    with pytest.raises(AccessRefused, match="is not a person's"):
        certs().admit(der("web1.example.net", *roles))


def test_the_allow_list_admits_its_names_only() -> None:
    assert certs("alice", "bob").admit(der("bob", "user")) == "bob"
    with pytest.raises(AccessRefused, match="allow list"):
        certs("alice").admit(der("mallory", "user"))


def test_a_foreign_or_expired_certificate_is_refused_here_too() -> None:
    other_key, other_cert = create_ca()
    foreign = issue_certificate(other_key, other_cert, "alice", roles=("user",))[1].public_bytes(DER)
    with pytest.raises(AccessRefused, match="not a trusted CA|not signed"):
        certs().admit(foreign)
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(AccessRefused, match="expired"):
        certs().admit(der("alice", "user", not_before=now - dt.timedelta(days=3), not_after=now - dt.timedelta(days=1)))


def test_allow_lists_from_options_and_config_split_on_commas() -> None:
    assert allow_list(["alice", "bob, carol", " ", ""]) == frozenset({"alice", "bob", "carol"})
