"""The ActionPolicy language: parsing, lint issues and decisions, from strings and dicts only."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nmc.authz import PolicySet, parse_groups, parse_policy, split_columns
from nmc.protocol.authz import AuthzAnswer, AuthzQuestion, ReloadNotice
from nmc.protocol.envelope import EnvelopeError

# MCollective's own sample, tab-separated as its actionpolicy plugin requires, with cert= callers.
MCO_SAMPLE = (
    "policy default deny\n"
    "allow\tcert=rip\t*\t*\t*\n"
    "allow\tcert=bob\t*\tcustomer=acme\tacme::devserver\n"
    "allow\tcert=bob\tenable disable status\tcustomer=acme\t*\n"
    "allow\tcert=ops\trestart\t(puppet_enabled=false and environment=production) or environment=development\n"
)


def decide(policies: PolicySet, caller: str, action: str = "runonce", facts: dict | None = None,
           classes: tuple[str, ...] = (), agent: str = "puppet"):
    return policies.decide(caller=caller, agent=agent, action=action, facts=facts or {}, classes=classes)


def one(text: str, groups: str | None = None) -> PolicySet:
    files = {"puppet.policy": text}
    if groups is not None:
        files["groups"] = groups
    return PolicySet.from_texts(files)


def test_mcollective_sample_file_decides_like_actionpolicy():
    ps = one(MCO_SAMPLE)
    assert ps.issues == ()
    assert decide(ps, "cert=rip").allowed
    acme_dev = {"customer": "acme"}
    assert decide(ps, "cert=bob", "anything", acme_dev, ("acme::devserver",)).rule == "puppet.policy:3"
    assert decide(ps, "cert=bob", "status", acme_dev).rule == "puppet.policy:4"
    denied = decide(ps, "cert=bob", "restart", acme_dev)
    assert not denied.allowed and denied.rule == "puppet.policy:1"
    assert "facts/classes of puppet.policy:3 do not match" in denied.reason
    # The compound expression in the facts column (Choria cannot do this).
    assert decide(ps, "cert=ops", "restart", {"environment": "development"}).allowed
    assert decide(ps, "cert=ops", "restart", {"environment": "production", "puppet_enabled": False}).allowed
    assert not decide(ps, "cert=ops", "restart", {"environment": "production", "puppet_enabled": True}).allowed


@pytest.mark.parametrize("line, columns, separator", [
    ("allow\tcert=a cert=b\tstatus restart\tenvironment=prod role=web\trole::web",
     ["allow", "cert=a cert=b", "status restart", "environment=prod role=web", "role::web"], "tabs"),
    ("allow \t cert=a\t\t*\t*", ["allow", "cert=a", "*", "*"], "tabs"),
    ("allow   cert=a cert=b   status   (a=1 and b=2) or c=3", ["allow", "cert=a cert=b", "status", "(a=1 and b=2) or c=3"],
     "spaces"),
    ("allow cert=a * * role::web", ["allow", "cert=a", "*", "*", "role::web"], "space"),
])
def test_columns(line, columns, separator):
    assert split_columns(line) == (columns, separator)


def test_column_problems_are_explained():
    text = ("allow cert=a cert=b status * x y\n"        # 7 single-spaced words: ambiguous
            "allow cert=a\t*\t*\n"                      # space after the keyword, tabs elsewhere
            "allow  cert=a  *\n"                        # too few columns
            "allow\tcert=a\t*\t*\t*\textra\n"           # too many
            "allow cert=b status *\n")                  # 4 single-spaced words: fine
    issues = parse_policy(text, "x.policy").issues
    assert [(i.line, i.severity) for i in issues] == [(1, "error"), (2, "error"), (3, "error"), (4, "error")]
    assert "ambiguous: 7 words separated by single spaces" in issues[0].message
    assert "tabs or two or more spaces" in issues[0].message
    assert "separated by tabs" in issues[1].message
    assert "found 3" in issues[2].message and "found 6" in issues[3].message
    assert str(issues[0]).startswith("x.policy:1: error: ")


def test_every_error_is_reported_with_file_and_line():
    text = ("policy default maybe\n"
            "# a comment\n"
            "\n"
            "allow\tcert=a\t*\t(environment=prod\n"
            "allow\t/[/\t*\t*\n"
            "allow\tcert=a\tcert=b\t*\n"
            "permit\tcert=a\t*\t*\n"
            "allow\tcert=a\t*\t*\tweb=1\n"
            "policy default deny\n"
            "policy default allow\n")
    issues = [i for i in parse_policy(text, "p.policy").issues if i.severity == "error"]
    assert [i.where for i in issues] == [f"p.policy:{n}" for n in (1, 4, 5, 6, 7, 8, 10)]
    assert "facts column: column" in issues[1].message
    assert "invalid regular expression" in issues[2].message
    assert "did the columns shift" in issues[3].message
    assert "not 'permit'" in issues[4].message
    assert "not a class name" in issues[5].message
    assert "second 'policy default' line (the first is p.policy:9)" in issues[6].message


def test_first_match_wins_and_default_applies():
    ps = one("policy default allow\n"
             "deny\tcert=bob\trestart\t*\n"
             "allow\tcert=bob\t*\t*\n")
    assert decide(ps, "cert=bob", "restart").rule == "puppet.policy:2"
    assert not decide(ps, "cert=bob", "restart").allowed
    assert decide(ps, "cert=bob", "status").rule == "puppet.policy:3"
    fallthrough = decide(ps, "cert=carol")
    assert fallthrough.allowed and fallthrough.rule == "puppet.policy:1"
    implicit = one("allow\tcert=bob\t*\t*\n")
    assert not decide(implicit, "cert=carol").allowed and decide(implicit, "cert=carol").rule == "puppet.policy"


def test_caller_matching_is_exact():
    ps = one("allow\tcert=alice cert=ops\t*\t*\n")
    for caller in ("cert=alice2", "cert=malice", "cert=ali", "cert=alice cert=ops", "alice", "cert=op", "cert=*"):
        assert not decide(ps, caller).allowed, caller
    assert decide(ps, "cert=alice").allowed and decide(ps, "cert=ops").allowed


def test_regex_callers_and_lint_warnings():
    ps = one("allow\t/^cert=ops-[0-9]+$/\t*\t*\n"
             "allow\t/adm/ uid=500\tstatus\t*\n"
             "allow\tcert=x *\tstatus\t*\n")
    assert decide(ps, "cert=ops-12").allowed and not decide(ps, "cert=ops-x").allowed
    warnings = [i.message for i in ps.issues]
    assert any("/adm/ is not anchored" in w for w in warnings)
    assert any("'uid=500' can never match" in w for w in warnings)
    assert any("makes the other callers redundant" in w for w in warnings)
    assert ps.errors == ()


def test_groups():
    ps = one("allow\tsysadmins\t*\t*\ndeny\tinterns\t*\t*\n", "# who is who\nsysadmins cert=sa1 cert=sa2\ninterns cert=i1\n")
    assert decide(ps, "cert=sa2").allowed and decide(ps, "cert=sa2").rule == "puppet.policy:1"
    assert not decide(ps, "cert=i1").allowed
    assert not decide(ps, "cert=sa").allowed


def test_unknown_or_broken_group_makes_the_file_deny():
    unknown = one("deny\tcontractors\t*\t*\nallow\t*\t*\t*\n", "sysadmins cert=sa1\n")
    d = decide(unknown, "cert=anyone")
    assert not d.allowed and d.rule == "puppet.policy:1" and "unknown group 'contractors'" in d.reason
    # A group defined twice is unusable: a deny rule must not quietly miss the second line's members.
    twice = one("deny\tbad\t*\t*\nallow\t*\t*\t*\n", "bad cert=b1\nbad cert=b2\n")
    d = decide(twice, "cert=b2")
    assert not d.allowed and "defined by a bad line (groups:2)" in d.reason
    groups = parse_groups("ok cert=a\nbad uid\n/x/ cert=b\n")
    assert [(i.line, i.severity) for i in groups.issues] == [(2, "error"), (3, "error")]
    assert "bad" in groups.broken and groups.members == {"ok": frozenset({"cert=a"})}


def test_unreadable_groups_file_fails_group_rules_closed():
    ps = PolicySet.from_texts({"puppet.policy": "allow\tsysadmins\t*\t*\n"}, unreadable={"groups": "not UTF-8 text"})
    d = decide(ps, "cert=sa1")
    assert not d.allowed and "groups file cannot be read" in d.reason


def test_classes_column_needs_every_class():
    ps = one("allow\tcert=a\t*\t*\trole::web /^nginx/\n")
    assert decide(ps, "cert=a", classes=("role::web", "nginx::server")).allowed
    assert not decide(ps, "cert=a", classes=("role::web",)).allowed


def test_default_policy_and_missing_policy():
    ps = PolicySet.from_texts({"default.policy": "allow\tcert=admin\t*\t*\n",
                               "puppet.policy": "allow\tcert=ops\t*\t*\n"})
    assert decide(ps, "cert=admin", agent="service").allowed
    assert decide(ps, "cert=admin", agent="service").rule == "default.policy:1"
    assert not decide(ps, "cert=admin", agent="puppet").allowed  # the agent's own file replaces default.policy
    none = PolicySet.from_texts({"puppet.policy": "allow\t*\t*\t*\n"})
    d = decide(none, "cert=admin", agent="service")
    assert not d.allowed and "no policy for agent 'service'" in d.reason


def test_broken_file_denies_only_its_agent_and_says_where():
    ps = PolicySet.from_texts({"puppet.policy": "allow\tcert=a\t*\t*\nallow cert=a cert=b status * x y\n",
                               "service.policy": "allow\tcert=a\t*\t*\n"})
    d = decide(ps, "cert=a")
    assert not d.allowed and d.rule == "puppet.policy:2"
    assert d.reason.startswith("puppet.policy has errors, so it denies every request: ambiguous")
    assert decide(ps, "cert=a", agent="service").allowed


def test_directory_problems_and_ignored_files():
    ps = PolicySet.from_texts({"puppet.policy": "allow\t*\t*\t*\n", "README": "hello", ".puppet.policy.swp": "x",
                               "pup pet.policy": "allow\t*\t*\t*\n"})
    assert [(i.where, i.severity) for i in ps.issues] == [("README", "warning"), ("pup pet.policy", "warning")]
    from nmc.authz.policy import PolicyIssue
    dead = PolicySet(fatal=(PolicyIssue("/etc/nmc/policies", 0, "policy directory /etc/nmc/policies does not exist"),))
    d = decide(dead, "cert=a")
    assert not d.allowed and "does not exist" in d.reason


def test_line_lookup_for_display():
    ps = one(MCO_SAMPLE)
    assert ps.line("puppet.policy:1") == "policy default deny"
    assert ps.line("puppet.policy:2") == "allow\tcert=rip\t*\t*\t*"
    assert ps.line("nothing.policy:2") == ""


_item = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)


@given(callers=st.lists(_item, min_size=1, max_size=3), actions=st.lists(_item, min_size=1, max_size=3),
       facts=st.lists(st.tuples(_item, _item), max_size=3), classes=st.lists(_item, max_size=3))
def test_tabs_and_space_runs_read_the_same(callers, actions, facts, classes):
    columns = [" ".join(f"cert={c}" for c in callers), " ".join(actions),
               " ".join(f"{k}={v}" for k, v in facts) or "*", " ".join(f"role::{c}" for c in classes) or "*"]
    tabbed = parse_policy("allow\t" + "\t".join(columns), "t.policy")
    spaced = parse_policy("allow   " + "   ".join(columns), "t.policy")
    assert tabbed.errors == () and spaced.errors == ()
    strip = lambda r: (r.allow, r.callers, r.actions, r.condition)
    assert [strip(r) for r in tabbed.rules] == [strip(r) for r in spaced.rules]


def test_wire_round_trip_and_strictness():
    q = AuthzQuestion(request_id="r1", caller="cert=a", agent="puppet", action="runonce", identity="web1",
                      facts={"x": [1, {"y": True}]}, classes=("role::web",))
    assert AuthzQuestion.from_bytes(q.to_bytes()) == q
    a = AuthzAnswer(request_id="r1", identity="web1", allowed=True, rule="puppet.policy:2", reason="ok", time=1.5)
    assert AuthzAnswer.from_bytes(a.to_bytes()) == a
    assert ReloadNotice.from_bytes(ReloadNotice(time=2.0, files=3).to_bytes()) == ReloadNotice(time=2.0, files=3)
    # Facts JSON cannot carry (a YAML date) are sent as text rather than failing the question.
    dated = AuthzQuestion(request_id="r2", caller="cert=a", agent="p", action="x", identity="n",
                          facts={"built": datetime.date(2024, 1, 2), "ratio": float("nan")})
    assert AuthzQuestion.from_bytes(dated.to_bytes()).facts == {"built": "2024-01-02", "ratio": "nan"}
    bad = [b"", b"[]", b'{"protocol":"nmc.authz.answer.v1"}', q.to_bytes(),
           a.to_bytes().replace(b'"allowed":true', b'"allowed":1'),
           a.to_bytes().replace(b'"error":false', b'"error":true')]
    for body in bad:
        with pytest.raises(EnvelopeError):
            AuthzAnswer.from_bytes(body)
