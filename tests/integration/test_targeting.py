"""Targeting on 30 real nodes: every operator, regexes, precedence, missing facts, routing, limits.

Each expected set is computed by an independent Python predicate over the
same facts, so the filter engine and the broker routing are checked against
something other than themselves.
"""

from __future__ import annotations

import re

import pytest

from nmc.client.discovery import Targeting, discover
from nmc.protocol.filter import combine

N = 30
COUNTRIES = ("us", "de", "uk", "fr", "us")
ROLES = ("web", "db", "cache")


def facts_for(i: int) -> dict:
    facts = {
        "country": COUNTRIES[i % 5], "role": ROLES[i % 3], "rank": i, "version": f"1.2.{i}",
        "customer": "acme" if i % 2 else "globex",
        "environment": ("production", "staging", "development")[i % 3 - 1 if i % 7 else 2],
        "os": {"family": "Debian" if i % 4 else "RedHat", "release": {"major": 12 if i % 4 else 9}},
        "tags": [f"t{i % 3}", "all"],
        "virtual": bool(i % 2),
    }
    if i % 6 == 0:
        facts["maintenance"] = "yes"
    return facts


def classes_for(i: int) -> list[str]:
    role = ROLES[i % 3]
    return [f"role::{role}", "base"] + (["apache", "apache::mod_ssl"] if role == "web" else [])


NODES = {f"n{i:02d}.test": (facts_for(i), classes_for(i)) for i in range(1, N + 1)}


def where(pred) -> set[str]:
    return {name for name, (f, c) in NODES.items() if pred(f, c, name)}


CASES = [
    # (filter expression, independent predicate, routed?)
    ("country=us", lambda f, c, n: f["country"] == "us", True),
    ("country==de", lambda f, c, n: f["country"] == "de", True),
    ("country!=us", lambda f, c, n: f["country"] != "us", False),
    ("rank<5", lambda f, c, n: f["rank"] < 5, False),
    ("rank>25", lambda f, c, n: f["rank"] > 25, False),
    ("rank<=3", lambda f, c, n: f["rank"] <= 3, False),
    ("rank>=28", lambda f, c, n: f["rank"] >= 28, False),
    ("rank=7", lambda f, c, n: f["rank"] == 7, True),
    ("version>=1.2.10", lambda f, c, n: int(f["version"].split(".")[2]) >= 10, False),
    ("version<1.2.9", lambda f, c, n: int(f["version"].split(".")[2]) < 9, False),
    ("country=~^u", lambda f, c, n: f["country"].startswith("u"), False),
    ("country=/^(de|fr)$/", lambda f, c, n: f["country"] in ("de", "fr"), False),
    ("os.family=RedHat", lambda f, c, n: f["os"]["family"] == "RedHat", True),
    ("os.release.major>=12", lambda f, c, n: f["os"]["release"]["major"] >= 12, False),
    ("tags=t1", lambda f, c, n: "t1" in f["tags"], True),
    ("virtual=true", lambda f, c, n: f["virtual"], True),
    ("maintenance=yes", lambda f, c, n: f.get("maintenance") == "yes", True),
    ("maintenance!=no", lambda f, c, n: "maintenance" in f, False),  # a missing fact never matches
    ("nosuchfact!=x", lambda f, c, n: False, False),
    ("apache", lambda f, c, n: "apache" in c, True),
    ("/^role::(db|cache)$/", lambda f, c, n: any(re.match(r"^role::(db|cache)$", k) for k in c), False),
    ("identity(n07.test)", lambda f, c, n: n == "n07.test", True),
    ("identity(/^n1[0-4]/)", lambda f, c, n: re.match(r"^n1[0-4]", n) is not None, False),
    ("agent(rpcutil) and country=fr", lambda f, c, n: f["country"] == "fr", True),
    ("((customer=acme and environment=staging) or environment=development) and /apache/",
     lambda f, c, n: ((f["customer"] == "acme" and f["environment"] == "staging")
                      or f["environment"] == "development") and "apache" in c, False),
    ("customer=acme and environment=staging or environment=development",  # and binds tighter than or
     lambda f, c, n: (f["customer"] == "acme" and f["environment"] == "staging")
     or f["environment"] == "development", False),
    ("not country=us and role=db", lambda f, c, n: f["country"] != "us" and f["role"] == "db", True),
    ("!(role=web or role=db)", lambda f, c, n: f["role"] == "cache", False),
    ("role=web apache::mod_ssl country=us", lambda f, c, n: f["role"] == "web" and f["country"] == "us", True),
]


@pytest.fixture
async def thirty(fleet):
    for name, (facts, classes) in NODES.items():
        await fleet.add(name, facts, classes)
    return fleet


async def test_every_operator_and_routing_on_30_nodes(thirty):
    fleet = thirty
    async with fleet.client(discovery_stall=0.25) as fc:
        for expr, pred, routed in CASES:
            before = {n.identity: n.pipeline.counters.total for n in fleet.nodes}
            found = await fc.discover(expr)
            got = {r.identity for r in found.results}
            assert got == where(pred), expr
            subject = fc.subject_for(expr, "rpcutil", "ping")
            assert (".all." not in subject) == routed, (expr, subject)
            delivered = {n.identity for n in fleet.nodes if n.pipeline.counters.total > before[n.identity]}
            if routed:
                # The broker routed it: the matching nodes got it, and not every node did.
                assert got <= delivered < set(NODES), (expr, sorted(delivered - got))
                if " " not in expr:
                    # A single routed term: nodes outside the filter never received the request at all.
                    assert delivered == got, expr
            else:
                assert delivered == set(NODES), f"{expr}: a broadcast reaches every node"


async def test_flags_combine_into_one_expression(thirty):
    expr = combine(facts=["country=us"], classes=["apache"], identities=["n05.test", "n10.test", "n15.test"])
    async with thirty.client(discovery_stall=0.25) as fc:
        found = await fc.discover(expr)
    assert {r.identity for r in found.results} == where(
        lambda f, c, n: f["country"] == "us" and "apache" in c and n in {"n05.test", "n10.test", "n15.test"})


async def test_limit_with_seed_is_deterministic_and_only_the_chosen_run(thirty):
    fleet = thirty
    async with fleet.client(discovery_stall=0.25) as fc:
        first = await discover(fc, "role=web", Targeting(limit="4", limit_seed=7))
        again = await discover(fc, "role=web", Targeting(limit="4", limit_seed=7))
        assert first.identities == again.identities and len(first.identities) == 4
        assert first.total == len(where(lambda f, c, n: f["role"] == "web"))
        before = {n.identity: n.pipeline.counters.passed for n in fleet.nodes}
        result = await fc.call("rpcutil", "ping", {}, filter_expr="role=web", expect=first.identities,
                               direct=first.direct)
        ran = {n.identity for n in fleet.nodes if n.pipeline.counters.passed > before[n.identity]}
        assert ran == set(first.identities) == {r.identity for r in result.results}
        pct = await discover(fc, "", Targeting(limit="10%", limit_seed=1))
        assert len(pct.identities) == 3
        one = await discover(fc, "", Targeting(one=True, limit_seed=3))
        assert len(one.identities) == 1


async def test_flatfile_and_stdin_lists_are_addressed_directly(thirty, tmp_path):
    fleet = thirty
    listing = tmp_path / "nodes.txt"
    listing.write_text("# maintenance window\nn01.test\nn02.test\n\nn03.test  # db\nghost.test\n")
    async with fleet.client() as fc:
        found = await discover(fc, "", Targeting(method="flatfile", nodes_file=listing))
        assert found.identities == ("ghost.test", "n01.test", "n02.test", "n03.test") and found.direct
        result = await fc.call("rpcutil", "ping", {}, expect=found.identities, direct=True, timeout=5)
        piped = await discover(fc, "", Targeting(method="stdin",
                                                 stdin_text='{"replies": [{"sender": "n09.test"}]}'))
    assert {r.identity for r in result.results} == {"n01.test", "n02.test", "n03.test"}
    assert result.no_response == ("ghost.test",)
    assert result.elapsed < 4, "a node subject nobody listens on answers 503 at once: no need to wait"
    assert piped.identities == ("n09.test",)


async def test_fact_change_reroutes_within_the_30(thirty):
    from nmc.services.facts import NodeFacts

    fleet = thirty
    node = fleet.node("n03.test")  # role web? i=3 -> ROLES[0] = web
    assert node.facts.facts["role"] == "web"
    await node.update_facts(NodeFacts(facts={**node.facts.facts, "role": "db"}, classes=node.facts.classes,
                                      version=node.facts.version + 1))
    async with fleet.client(discovery_stall=0.25) as fc:
        before = node.pipeline.counters.total
        web = {r.identity for r in (await fc.discover("role=web")).results}
        assert node.pipeline.counters.total == before, "role=web requests are no longer delivered to it"
        db = {r.identity for r in (await fc.discover("role=db")).results}
    assert "n03.test" not in web and "n03.test" in db
    assert web == where(lambda f, c, n: f["role"] == "web") - {"n03.test"}
