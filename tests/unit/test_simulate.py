"""The simulator's pure parts: slicing nodes over workers, option checks, node config overrides, worker lines."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from nmc.cli.main import cli
from nmc.ops.fleet.dev import DevLayout
from nmc.ops.fleet.simulate import (
    SimSettings,
    SimulateError,
    WorkerReport,
    node_overrides,
    node_slices,
)


@given(nodes=st.integers(1, 6000), processes=st.integers(1, 64))
def test_slices_cover_every_node_once_in_even_contiguous_parts(nodes, processes):
    slices = node_slices(nodes, processes)
    assert [n for s in slices for n in s] == list(range(1, nodes + 1))
    assert len(slices) == min(nodes, processes)
    sizes = [len(s) for s in slices]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_slices_examples():
    assert node_slices(5, 2) == (range(1, 4), range(4, 6))
    assert node_slices(2, 8) == (range(1, 2), range(2, 3))
    with pytest.raises(ValueError):
        node_slices(0, 2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nodes": 0}, "--nodes must be at least 1"),
    ({"nodes": 10, "processes": 0}, "--processes must be at least 1"),
    ({"nodes": 10, "authz": "maybe"}, "--authz must be one of none, local, service"),
])
def test_settings_refuse_what_cannot_run(kwargs, message):
    with pytest.raises(SimulateError, match=message):
        SimSettings(**kwargs)


def test_never_more_workers_than_nodes():
    assert SimSettings(nodes=3, processes=8).workers == 3
    assert SimSettings(nodes=3000, processes=2).workers == 2


def test_overrides_per_authz_mode_and_audit(tmp_path):
    layout = DevLayout(tmp_path)
    local = node_overrides(SimSettings(nodes=1), layout)
    assert local["authz.mode"] == "local" and local["authz.policydir"] == str(tmp_path / "policy" / "policies")
    assert local["authz.signers"] == ""  # dropped: no policy service to trust
    assert "audit.enabled" not in local  # audit is on by default, as on a real node
    service = node_overrides(SimSettings(nodes=1, authz="service", audit=False), layout)
    assert service["authz.mode"] == "service" and service["authz.signers"] == "nmc-policy"
    assert service["audit.enabled"] == "false"
    assert node_overrides(SimSettings(nodes=1, authz="none"), layout)["authz.mode"] == "none"


def test_worker_lines_round_trip_and_garbage_is_one_line_error():
    report = WorkerReport("ready", 123, nodes=500, seconds=4.25)
    assert WorkerReport.from_line(report.to_line()) == report
    with pytest.raises(SimulateError, match="unexpected line from a simulator worker"):
        WorkerReport.from_line("Traceback (most recent call last):\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--nodes", "0"], "--nodes must be at least 1, got 0"),
    (["--nodes", "10", "--processes", "-1"], "--processes must be at least 1"),
    (["--nodes", "10", "--authz", "maybe"], "'maybe' is not one of"),
])
def test_cli_usage_errors_are_one_line(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["ops", "simulate", "--dir", str(tmp_path / "sim"), *args])
    assert result.exit_code == 2, result.output  # click's usage code; `nmc` maps it to 4
    assert "Traceback" not in result.output and message in result.output
    assert [ln for ln in result.output.splitlines() if ln.startswith("Error:")] == [
        next(ln for ln in result.output.splitlines() if message in ln)]
    assert not (tmp_path / "sim").exists(), "nothing is written before the options are checked"


def test_help_has_an_example():
    result = CliRunner().invoke(cli, ["ops", "simulate", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--processes" in result.output
