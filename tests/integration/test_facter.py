"""The real Debian `facter` (4.x) as a fact source, and routing on the facts it reports.

facter is optional for nmc's users (YAML facts work without it): without the
`facter` package these tests are skipped with one line, except in CI, where
.ci/run installs it and a missing facter fails them (tests/tools.py).
"""

from __future__ import annotations

import platform
from pathlib import Path

from nmc.protocol.filter import combine
from nmc.services.facts import FactSources, builtin_facts
from tests.tools import needs_tool

FACTER = ("facter", "--json")
_facter = needs_tool("facter")


async def test_facter_reports_real_facts():
    facts = (await FactSources(builtin=False, facter_command=FACTER).collect()).facts
    assert str(facts["facterversion"]).startswith("4.")
    assert facts["kernel"] == platform.system() == "Linux"
    assert facts["kernelrelease"] == platform.release()
    assert isinstance(facts["processors"]["count"], int) and facts["processors"]["count"] >= 1
    # Our built-in collector names and fills these facts the way facter does, so filters port over.
    assert facts["os"]["family"] == builtin_facts()["os"]["family"]
    assert facts["os"]["release"]["major"] == builtin_facts()["os"]["release"]["major"]


async def test_facter_sits_between_builtin_and_yaml(tmp_path: Path):
    overrides = tmp_path / "facts.yaml"
    overrides.write_text("kernel: Plan9\nrole: web\n")
    facts = (await FactSources(builtin=True, facter_command=FACTER, yaml_files=(overrides,)).collect()).facts
    assert "distro" in facts["os"]  # facter's `os` replaced the built-in one (which has no distro)
    assert "python_version" in facts and "facterversion" in facts  # both collectors contributed
    assert facts["kernel"] == "Plan9" and facts["role"] == "web"  # YAML has the last word


async def test_node_with_facter_facts_is_found_by_routed_filters(fleet):
    collected = await FactSources(builtin=False, facter_command=FACTER).collect()
    family = collected.facts["os"]["family"]
    facter_node = await fleet.add("facter1.test", dict(collected.facts))
    other = await fleet.add("other1.test", {"kernel": "SunOS", "os": {"family": "Solaris"}})
    async with fleet.client(discovery_stall=0.2) as fc:
        for expr in (combine(facts=["kernel=Linux"]), combine(facts=[f"os.family={family}"])):
            assert ".fact." in fc.subject_for(expr, "rpcutil", "ping"), expr  # routed, not broadcast
            assert {r.identity for r in (await fc.discover(expr)).results} == {"facter1.test"}
        # A routed request for facts the facter node does not have never reaches it.
        received = facter_node.pipeline.counters.total
        assert {r.identity for r in (await fc.discover(combine(facts=["kernel=SunOS"]))).results} == {"other1.test"}
    assert facter_node.pipeline.counters.total == received
    assert other.pipeline.counters.total == 1
