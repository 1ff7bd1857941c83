"""Broker users and permissions by role (nmc.ops.broker.authorization): pure planning and rendering."""

from __future__ import annotations

import datetime as dt

import pytest

from nmc.ops.broker.server import BrokerError, BrokerSettings, render_config
from nmc.ops.broker.authorization import (
    Authorization,
    BrokerUser,
    Permissions,
    Scope,
    audit_permissions,
    node_permissions,
    operator_permissions,
    plan_users,
    policy_permissions,
    render_authorization,
    spki_pin,
    user_permissions,
)
from nmc.security import create_ca, issue_certificate
from nmc.security.crl import Revocation, RevocationList, build_crl, crl_pem

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def ca():
    return create_ca()


def _cert(ca, name, *roles, **kw):
    return issue_certificate(*ca, name, roles=roles, **kw)[1]


def test_user_subscribes_only_to_its_own_inbox_and_publishes_requests():
    perms = user_permissions("alice", Scope(collective="prod"))
    # Its inbox, and the fleet's lifecycle events (fleet state, not secrets: docs/events.md).
    assert perms.subscribe == ("_INBOX.alice.>", "nmc.events.>")
    assert perms.publish[:5] == ("nmc.prod.all.>", "nmc.prod.fact.>", "nmc.prod.class.>", "nmc.prod.node.>", "$SRV.>")
    # Streams are read one stored message at a time: no consumer; direct get only of its own jobs, with the
    # subject in the API subject (the one form the broker can restrict by stored subject).
    assert {"$JS.API.STREAM.INFO.KV_nmc_registry", "$JS.API.STREAM.MSG.GET.KV_nmc_registry",
            "$JS.API.STREAM.INFO.NMC_AUDIT", "$JS.API.STREAM.MSG.GET.NMC_AUDIT"} <= set(perms.publish)
    assert not any("CONSUMER" in s for s in perms.publish)
    assert [s for s in perms.publish if "DIRECT" in s] == ["$JS.API.DIRECT.GET.NMC_JOBS.nmc.jobs.prod.alice.>"]
    assert not perms.allow_responses and perms.publish_deny == ()
    assert not any(s.startswith(("nmc.audit", "_INBOX", "$KV.")) for s in perms.publish)


def test_node_hears_its_own_subjects_and_writes_only_its_own_records():
    perms = node_permissions("web1.example.com", Scope())
    assert "nmc.nmc.node.web1%2Eexample%2Ecom.>" in perms.subscribe
    assert "_INBOX.web1%2Eexample%2Ecom.>" in perms.subscribe
    assert {"nmc.nmc.authz.check", "nmc.audit.nmc.web1%2Eexample%2Ecom",
            "$KV.nmc_registry.nmc.web1=2Eexample=2Ecom"} <= set(perms.publish)
    assert not any(s.startswith("nmc.nmc.all") for s in perms.publish)
    # Answers go to inboxes, never through allow_responses (which beats every deny); streams are the operator's.
    assert not perms.allow_responses and "_INBOX.>" in perms.publish
    assert not any("STREAM.CREATE" in s or "STREAM.UPDATE" in s for s in perms.publish)


def test_services_get_their_subjects():
    policy = policy_permissions("p1", Scope())
    assert policy.subscribe == ("nmc.*.authz.check", "$SRV.>", "_INBOX.p1.>") and not policy.allow_responses
    assert policy.publish == ("nmc.*.authz.reloaded", "nmc.events.*.*.p1", "_INBOX.>")
    audit = audit_permissions("a1", Scope())
    # Reads by message like users; no consumer in any subject form (a consumer delivers where its creator says).
    assert audit.may_publish("$JS.API.STREAM.MSG.GET.NMC_AUDIT") and audit.may_publish("$JS.API.STREAM.INFO.NMC_AUDIT")
    assert not any(audit.may_publish(s) for s in (
        "$JS.API.CONSUMER.CREATE.NMC_AUDIT", "$JS.API.CONSUMER.CREATE.NMC_AUDIT.nmc-audit",
        "$JS.API.CONSUMER.DURABLE.CREATE.NMC_AUDIT.nmc-audit", "$JS.API.CONSUMER.MSG.NEXT.NMC_AUDIT.nmc-audit",
        "$JS.ACK.NMC_AUDIT.nmc-audit.1.1.1.1.0", "$JS.API.STREAM.MSG.GET.KV_nmc_registry"))
    assert not any("STREAM.CREATE" in s or "STREAM.UPDATE" in s for s in audit.publish)
    assert audit.subscribe == ("$SRV.>", "_INBOX.a1.>", "nmc.audit.>", "nmc.events.>") and not audit.allow_responses
    operator = operator_permissions("ops1", Scope())
    assert operator.subscribe == ("_INBOX.ops1.>",)
    assert set(operator.publish) == {f"$JS.API.STREAM.{verb}.{stream}" for verb in ("INFO", "CREATE", "UPDATE")
                                     for stream in ("NMC_AUDIT", "KV_nmc_registry", "NMC_JOBS", "NMC_EVENTS")}


def test_union_keeps_a_deny_only_where_the_other_role_does_not_allow_it():
    scope = Scope()
    both = user_permissions("ops", scope) | audit_permissions("ops", scope)
    assert both.may_subscribe("nmc.audit.nmc.web1") and "_INBOX.ops.>" in both.subscribe
    assert both.may_publish("nmc.nmc.all.rpcutil.ping") and not both.allow_responses
    same = user_permissions("u", scope) | user_permissions("u", scope)
    assert same == user_permissions("u", scope)
    partial = Permissions(publish=("a.>",), publish_deny=("a.b",))
    assert (partial | partial).publish_deny == ("a.b",)
    assert (Permissions(publish=("a.b",)) | Permissions(publish_deny=("a.b",))).publish_deny == ()
    assert (Permissions(publish=("x",)) | Permissions(publish_deny=("a.b",))).publish_deny == ("a.b",)


def test_scope_refuses_names_that_break_subjects():
    with pytest.raises(ValueError):
        Scope(registry_bucket="a.b")
    with pytest.raises(ValueError):
        Scope(audit_stream="A B")
    with pytest.raises(ValueError):
        Scope(collective="")


def test_plan_admits_issued_unrevoked_unexpired_certificates_with_a_role(ca):
    now = dt.datetime.now(UTC)
    alice, web1 = _cert(ca, "alice", "user", "ops"), _cert(ca, "web1", "node")
    revoked = _cert(ca, "bob", "user")
    expired = _cert(ca, "carol", "user", not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1))
    no_role, broker = _cert(ca, "dave", "ops"), _cert(ca, "broker", "broker", server=True)
    foreign = _cert(create_ca(), "eve", "user")
    crl = RevocationList.from_pem(crl_pem(build_crl(*ca, [Revocation(revoked.serial_number, now)])), [ca[1]])
    auth = plan_users([alice, web1, revoked, expired, no_role, broker, foreign, alice], Scope(),
                      ca_certificates=[ca[1]], revocations=crl)
    assert [(u.user, u.roles) for u in auth.users] == [("alice", ("user",)), ("web1", ("node",))]
    assert auth.users[0].pins == (spki_pin(alice),)
    reasons = {s.name: s.reason for s in auth.skipped}
    assert set(reasons) == {"bob", "carol", "dave", "eve"}
    assert "revoked" in reasons["bob"] and "expired" in reasons["carol"]
    assert "no broker role" in reasons["dave"] and "not issued by a trusted CA" in reasons["eve"]


def test_rotation_pins_both_keys_of_one_user(ca):
    old, new = _cert(ca, "alice", "user"), _cert(ca, "alice", "user")
    [user] = plan_users([old, new], Scope(), ca_certificates=[ca[1]]).users
    assert user.pins == tuple(sorted({spki_pin(old), spki_pin(new)}))


def test_role_patterns_give_roleless_certificates_a_role(ca):
    certs = [_cert(ca, "alice.users"), _cert(ca, "web1.example.com"), _cert(ca, "odd")]
    auth = plan_users(certs, Scope(), ca_certificates=[ca[1]],
                      role_patterns=[("user", "*.users"), ("node", "*.example.com")])
    assert [(u.name, u.roles) for u in auth.users] == [("alice.users", ("user",)), ("web1.example.com", ("node",))]
    assert [s.name for s in auth.skipped] == ["odd"]
    with pytest.raises(ValueError, match="unknown broker role"):
        plan_users(certs, Scope(), ca_certificates=[ca[1]], role_patterns=[("admin", "*")])


def test_render_is_a_users_block_with_allow_deny_and_responses(ca):
    auth = plan_users([_cert(ca, "alice", "user"), _cert(ca, "web1", "node"), _cert(ca, "x", "ops")], Scope(),
                      ca_certificates=[ca[1]])
    text = render_authorization(auth)
    assert text.startswith("authorization {") and text.endswith("}")
    assert 'user: "alice"' in text and 'subscribe: { allow: ["_INBOX.alice.>", "nmc.events.>"] }' in text
    assert "allow_responses" not in text and "deny" not in text
    perms = Permissions(publish=("a.>",), publish_deny=("a.b",), allow_responses=True)
    one = render_authorization(Authorization(users=(BrokerUser(user="u", name="u", roles=(), pins=(), permissions=perms),)))
    assert 'publish: { allow: ["a.>"], deny: ["a.b"] }' in one and one.count("allow_responses: true") == 1
    assert "# skipped x: no broker role" in text
    assert 'users = [\n  ]' in render_authorization(Authorization())


def test_nothing_allowed_renders_an_explicit_deny():
    text = render_authorization(Authorization(users=(
        __import__("nmc.ops.broker.authorization", fromlist=["BrokerUser"]).BrokerUser(
            user="u", name="u", roles=(), pins=(), permissions=Permissions()),)))
    assert 'publish: { deny: [">"] }' in text and 'subscribe: { deny: [">"] }' in text


def test_broker_settings_render_pins_and_authorization(tmp_path):
    pin = "ab" * 32
    settings = BrokerSettings(tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem", tls_ca=tmp_path / "ca.pem",
                              tls_map=True, tls_pinned=(pin,), authorization="authorization {\n}")
    text = render_config(settings)
    assert "  verify_and_map: true\n  pinned_certs: [\n    \"" + pin + "\"\n  ]\n}" in text
    assert text.rstrip().endswith("authorization {\n}")
    with pytest.raises(BrokerError, match="not a hex SHA-256"):
        BrokerSettings(tls_cert=tmp_path / "c", tls_key=tmp_path / "k", tls_ca=tmp_path / "ca", tls_map=True,
                       tls_pinned=("nothex",))
    with pytest.raises(BrokerError, match="need client verification"):
        BrokerSettings(tls_cert=tmp_path / "c", tls_key=tmp_path / "k", tls_pinned=(pin,))


def test_a_users_permissions_do_not_depend_on_the_other_certificates(ca):
    """Revoking one certificate and regenerating the configuration changes nobody else's block (issue 14 hole 13)."""
    certs = {name: _cert(ca, name, *roles) for name, roles in (
        ("alice", ("user",)), ("web1", ("node",)), ("nmc-policy", ("policy",)), ("nmc-audit", ("audit",)),
        ("ops1", ("operator",)), ("site1", ("leaf",)), ("mallory", ("user",)))}
    everyone = plan_users(certs.values(), Scope(), ca_certificates=[ca[1]])
    without = plan_users([c for n, c in certs.items() if n != "mallory"], Scope(), ca_certificates=[ca[1]])
    assert [u for u in everyone.users if u.name != "mallory"] == list(without.users)
    assert not any(u.permissions.allow_responses for u in everyone.users)
