"""jobs.policy: who may read whose jobs, decided when the broker's configuration is generated (nmc.authz.jobread)."""

from __future__ import annotations

import pytest

from nmc.authz.jobread import ALL_CALLERS, JobPolicyError, job_read_grants
from nmc.authz.policyset import PolicySet
from nmc.ops.broker.authorization import Scope, plan_users
from nmc.security import create_ca, issue_certificate

PEOPLE = ["alice", "bob", "carol", "lead-1", "ops-1", "ops-2"]


def grants(policy: str, groups: str = "", **more: str):
    texts = {"jobs.policy": policy, **({"groups": groups} if groups else {}), **more}
    return job_read_grants(PolicySet.from_texts(texts), PEOPLE, PEOPLE)


def test_named_callers_a_group_and_a_regex_become_grants_of_exactly_those_callers():
    policy = ("policy default deny\n"
              "allow   cert=bob        read    caller=alice\n"
              "allow   oncall          read    *\n"
              "allow   /^cert=lead-/   read    caller=/^ops-/\n")
    assert grants(policy, "oncall cert=carol\n") == {"bob": ("alice",), "carol": ALL_CALLERS,
                                                     "lead-1": ("ops-1", "ops-2")}


def test_without_jobs_policy_nothing_is_granted_not_even_by_default_policy():
    everything = "policy default allow\nallow * * *\n"
    assert job_read_grants(PolicySet.from_texts({"default.policy": everything}), PEOPLE, PEOPLE) == {}


def test_a_deny_rule_and_other_actions_grant_nothing():
    policy = ("policy default deny\n"
              "deny    cert=bob   read    caller=alice\n"
              "allow   cert=bob   *       caller=alice\n"
              "allow   cert=carol  run     caller=alice\n")
    assert grants(policy) == {}


def test_a_policy_with_an_error_is_refused_with_where_it_is_wrong():
    with pytest.raises(JobPolicyError, match=r"jobs.policy:2: error"):
        grants("policy default deny\nallow cert=bob read caller=(alice\n")
    with pytest.raises(JobPolicyError, match="unknown group"):
        grants("policy default deny\nallow nosuchgroup read *\n")


def test_plan_users_gives_the_granted_reader_direct_gets_of_those_callers_only():
    ca = create_ca()
    certs = [issue_certificate(*ca, name, roles=roles)[1] for name, roles in
             (("alice", ("user",)), ("bob", ("user",)), ("web1", ("node",)), ("mallory", ("user",)))]
    policy = PolicySet.from_texts({"jobs.policy": "policy default deny\nallow cert=bob read caller=alice\n"
                                                  "allow cert=web1 read *\n"})
    scope = Scope(collective="prod")
    users = {u.name: u.permissions for u in plan_users(certs, scope, ca_certificates=[ca[1]], job_policy=policy).users}
    plain = {u.name: u.permissions for u in plan_users(certs, scope, ca_certificates=[ca[1]]).users}
    direct = "$JS.API.DIRECT.GET.NMC_JOBS.nmc.jobs.prod"
    assert users["bob"].may_publish(f"{direct}.alice.0123abcd.start")
    assert not users["bob"].may_publish(f"{direct}.mallory.0123abcd.start")
    assert not plain["bob"].may_publish(f"{direct}.alice.0123abcd.start")
    # Everyone the policy does not name keeps exactly the built-in permissions; a node is never a reader.
    assert {n: p for n, p in users.items() if n != "bob"} == {n: p for n, p in plain.items() if n != "bob"}


def test_broker_config_refuses_a_broken_jobs_policy_in_one_line_and_writes_nothing(tmp_path):
    from click.testing import CliRunner

    from nmc.cli.main import cli
    from nmc.ops import pki

    pki.init_ca(tmp_path / "ca")
    pki.issue(tmp_path / "ca", "alice", roles=("user",))
    pki.issue(tmp_path / "ca", "bob", roles=("user",))
    policies, out = tmp_path / "policies", tmp_path / "broker.conf"
    policies.mkdir()
    (policies / "jobs.policy").write_text("policy default deny\nallow   cert=bob   read   caller=(alice\n")
    args = ["ops", "broker", "config", "--ca-dir", str(tmp_path / "ca"), "--policy-dir", str(policies), "-o", str(out)]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1 and "jobs.policy:2: error" in refused.output and "Traceback" not in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not out.exists()
    missing = CliRunner().invoke(cli, [*args[:6], str(tmp_path / "nosuch"), *args[7:]])
    assert missing.exit_code == 1 and missing.output.strip() == f"Error: policy directory {tmp_path / 'nosuch'} does not exist"
    (policies / "jobs.policy").write_text("policy default deny\nallow   cert=bob   read   caller=alice\n")
    written = CliRunner().invoke(cli, args)
    assert written.exit_code == 0, written.output
    assert "$JS.API.DIRECT.GET.NMC_JOBS.nmc.jobs.nmc.alice.>" in out.read_text()
