"""Rendering systemd units and the example /etc/nmc tree (nmc.ops.fleet.systemd, pure)."""

from __future__ import annotations

import configparser
from pathlib import Path, PurePosixPath

import pytest

from nmc.ops.config.files import KNOWN_KEYS, load_config
from nmc.ops.fleet.systemd import (
    SystemdOptions,
    etc_tree,
    home_directory_warning,
    installed_nmc,
    render_unit,
    render_units,
)

NMC = ("/usr/local/bin/nmc",)
SANDBOX = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes"}


def parse_unit(text: str) -> configparser.ConfigParser:
    """A unit as sections of keys; duplicate keys or sections would raise."""
    parser = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign] - systemd keys are case-sensitive
    parser.read_string(text)
    return parser


def test_node_unit_runs_as_root_without_sandbox_and_reloads_facts_on_hup():
    unit = parse_unit(render_unit("node", SystemdOptions(exec_start=NMC)))
    service = unit["Service"]
    assert service["ExecStart"] == "/usr/local/bin/nmc serve node --config /etc/nmc/server.cfg"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    assert service["Type"] in ("exec", "simple")
    # The puppet, package and service agents need root and setuid helpers.
    assert "User" not in service and not set(SANDBOX) & set(service)
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "Deliberately not sandboxed" in render_unit("node", SystemdOptions(exec_start=NMC))


@pytest.mark.parametrize("role", ["policy", "audit", "console"])
def test_policy_and_audit_units_are_sandboxed_under_their_own_user(role: str):
    options = SystemdOptions(exec_start=NMC, user="nmcsvc", etc=PurePosixPath("/srv/nmc"))
    service = parse_unit(render_unit(role, options))["Service"]
    assert service["ExecStart"] == f"/usr/local/bin/nmc serve {role} --config /srv/nmc/{role}.cfg"
    assert service["User"] == "nmcsvc" and service["Group"] == "nmcsvc"
    assert {k: service.get(k) for k in SANDBOX} == SANDBOX
    assert service["CapabilityBoundingSet"] == "" and service["Restart"] == "on-failure"
    # The policy service re-reads policies on SIGHUP; the audit service has no handler, so HUP would stop it.
    assert ("ExecReload" in service) == (role == "policy")
    if role == "audit":
        assert service["LogsDirectory"] == "nmc" and service["ReadWritePaths"] == "/var/log/nmc"


def test_render_units_names_all_four():
    assert sorted(render_units(SystemdOptions(exec_start=NMC))) == [
        "nmc-audit.service", "nmc-console.service", "nmc-node.service", "nmc-policy.service"]


def test_exec_start_escapes_spaces_percent_and_dollar():
    options = SystemdOptions(exec_start=("/opt/my tools/bin/python3", "-m", "nmc"), etc=PurePosixPath("/etc/n%c"))
    service = parse_unit(render_unit("node", options))["Service"]
    assert service["ExecStart"] == '"/opt/my tools/bin/python3" -m nmc serve node --config /etc/n%%c/server.cfg'


@pytest.mark.parametrize("bad", [
    {"exec_start": ("nmc",)}, {"etc": PurePosixPath("etc/nmc")}, {"user": "root"}, {"user": "Bad User"},
    {"identity": "a b"}, {"servers": "nats://a:1 nats://b:2"},
])
def test_options_refuse_values_that_would_make_a_broken_unit(bad: dict):
    with pytest.raises(ValueError):
        SystemdOptions(**{"exec_start": NMC, **bad})


def test_installed_nmc_prefers_the_script_beside_the_interpreter():
    beside = Path("/opt/venv/bin/nmc")
    assert installed_nmc("/opt/venv/bin/python", lambda _: "/usr/bin/nmc", lambda p: p == beside) == (str(beside),)
    assert installed_nmc("/usr/bin/python3", lambda _: "/usr/local/bin/nmc", lambda p: False) == (
        "/usr/local/bin/nmc",)
    assert installed_nmc("/usr/bin/python3", lambda _: None, lambda p: False) == ("/usr/bin/python3", "-m", "nmc")


def test_home_directory_install_is_warned_about():
    assert home_directory_warning(SystemdOptions(exec_start=("/root/.venv/bin/nmc",))) is not None
    assert home_directory_warning(SystemdOptions(exec_start=NMC)) is None


def test_etc_tree_configs_use_only_known_keys_of_their_kind(tmp_path: Path):
    options = SystemdOptions(exec_start=NMC, etc=PurePosixPath(tmp_path), identity="web7.example.com")
    tree = etc_tree(options)
    assert {"server.cfg", "client.cfg", "policy.cfg", "audit.cfg", "facts.yaml", "plugin.d/nats.cfg",
            "policies/default.policy", "ssl/README"} <= set(tree)
    for rel, text in tree.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    for name, kind in (("server.cfg", "server"), ("client.cfg", "client"), ("policy.cfg", "server"),
                       ("audit.cfg", "server"), ("console.cfg", "server")):
        config = load_config(tmp_path / name, kind=kind, env={})
        set_here = [s.key for s in config.settings.values() if s.origin != "default"]
        assert set_here, name
        unknown = [k for k in set_here if k not in KNOWN_KEYS or kind not in KNOWN_KEYS[k].kinds]
        assert unknown == [], f"{name}: {unknown}"
        # plugin.d/nats.cfg gives every config the broker URLs.
        assert config.get("plugin.nats.servers") == "tls://nats.example.com:4222"
    server = load_config(tmp_path / "server.cfg", kind="server", env={})
    assert server.get("identity") == "web7.example.com"
    assert server.get_path("plugin.security.cert_file") == tmp_path / "ssl" / "web7.example.com.pem"
    assert server.get_paths("plugindir") == [tmp_path / "agents"] and (tmp_path / "agents").is_dir()
    assert server.get("authz.mode") == "service"
