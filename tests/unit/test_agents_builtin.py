"""Built-in package/service/shell agents: parsing, command choice and validation, without a fleet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nmc.ops.config.files import KNOWN_KEYS
from nmc.protocol.ddl import InputError, validate_inputs
from nmc.protocol.status import Status
from nmc.services.agent import ActionFailed
from nmc.services.agents import BUILTIN_AGENTS, Package, RpcUtil, Service, Shell
from nmc.services.agents._proc import Completed
from nmc.protocol.ddls.package import PACKAGE_NAME, PACKAGE_VERSION
from nmc.services.agents.package import DEFAULT_COMMANDS, error_line, parse_status
from nmc.services.agents.service import BACKENDS, choose_backend, service_state


def completed(stdout: str = "", stderr: str = "", exitcode: int = 0) -> Completed:
    return Completed(argv=("x",), pid=1, exitcode=exitcode, stdout=stdout, stderr=stderr, stdout_truncated=False,
                     stderr_truncated=False, duration=0.0, timed_out=False)


def agent(cls, settings=None):
    """An agent instance with these plugin.<agent>.* settings and no node (none of these tests needs one)."""
    return cls(None, settings=settings or {})


def test_builtin_agents_registered():
    names = [cls.name for cls in BUILTIN_AGENTS]
    assert names[0] == "rpcutil" and {"package", "service", "shell"} <= set(names)
    assert BUILTIN_AGENTS[0] is RpcUtil and Package.concurrency == 1


def test_config_defaults_are_the_agents_defaults():
    for key, template in DEFAULT_COMMANDS.items():
        assert KNOWN_KEYS[f"plugin.package.{key}"].default == template
    assert KNOWN_KEYS["plugin.shell.enabled"].default == "false"
    assert KNOWN_KEYS["plugin.shell.max_output"].default == "65536"
    assert KNOWN_KEYS["plugin.service.backend"].default == "auto"


@pytest.mark.parametrize("name", ["bash", "libc6", "g++", "python3.11", "libstdc++6:amd64", "nmc-test-pkg"])
def test_package_names_accepted(name):
    assert re.search(PACKAGE_NAME, name)


@pytest.mark.parametrize("name", ["-oops", "a", "Bash", "x;rm", "a b", "pkg=1.0", "../x", "$(id)", "pkg\n"])
def test_package_names_refused(name):
    spec = Package.spec().actions["install"]
    with pytest.raises(InputError) as info:
        validate_inputs(spec, {"package": name})
    assert info.value.status == Status.INVALID_DATA


@pytest.mark.parametrize("version", ["1.0", "1:2.36-9+deb12u4", "0.9~rc1", "2.0+dfsg-1"])
def test_versions_accepted(version):
    assert re.search(PACKAGE_VERSION, version)


@pytest.mark.parametrize("version", ["-1", "v1.0", "1.0 --force-all", "1.0;x", "", "1.0\n"])
def test_versions_refused(version):
    with pytest.raises(InputError):
        validate_inputs(Package.spec().actions["install"], {"package": "bash", "version": version})


def test_parse_status():
    assert parse_status("bash", 0, "install ok installed\t5.2.15-2+b8\tamd64\n") == {
        "package": "bash", "status": "installed", "version": "5.2.15-2+b8", "arch": "amd64"}
    assert parse_status("gone", 1, "") == {"package": "gone", "status": "absent", "version": "", "arch": ""}
    assert parse_status("old", 0, "unknown ok not-installed\t\t\n")["status"] == "absent"
    assert parse_status("cfg", 0, "deinstall ok config-files\t1.0\tall\n") == {
        "package": "cfg", "status": "config-files", "version": "1.0", "arch": "all"}
    with pytest.raises(ValueError):
        parse_status("x", 2, "")
    with pytest.raises(ValueError):
        parse_status("x", 0, "garbage")


def test_error_line_prefers_the_package_managers_error():
    out = "Reading package lists...\nE: Unable to locate package nope\nsome trailing note\n"
    assert error_line(completed(out, exitcode=100)) == "E: Unable to locate package nope"
    assert error_line(completed("a\nlast words\n", exitcode=1)) == "last words"
    assert error_line(completed(exitcode=3)) == "exit code 3"


def test_install_with_version_uses_apts_name_equals_version():
    pkg = agent(Package)
    assert pkg._argv("install_command", {"package": "bash=5.2", "version": "5.2"}) == [
        "apt-get", "install", "-y", "bash=5.2"]
    assert pkg._argv("update_command", {"package": "bash"}) == ["apt-get", "install", "-y", "--only-upgrade", "bash"]
    custom = agent(Package, {"install_command": "dpkg -i /debs/{package}_{version}.deb"})
    with pytest.raises(ActionFailed) as info:
        custom._argv("install_command", {"package": "p", "version": None})
    assert "plugin.package.install_command" in info.value.message


def test_backend_auto_follows_systemd(tmp_path: Path):
    marker = tmp_path / "systemd"
    assert choose_backend("auto", str(marker)) == "service"
    marker.mkdir()
    assert choose_backend("auto", str(marker)) == "systemctl"
    assert choose_backend("service", str(marker)) == "service"
    assert choose_backend("SystemCtl", str(tmp_path / "none")) == "systemctl"
    with pytest.raises(ValueError):
        choose_backend("upstart")


def test_service_argv_per_backend():
    systemd = agent(Service, {"backend": "systemctl"})
    sysv = agent(Service, {"backend": "service"})
    assert systemd.argv("status", "nginx") == ["systemctl", "is-active", "nginx"]
    assert systemd.argv("restart", "nginx") == ["systemctl", "restart", "nginx"]
    assert sysv.argv("start", "nginx") == ["service", "nginx", "start"]
    custom = agent(Service, {"backend": "systemctl", "stop_command": "/usr/local/bin/svc down {service}"})
    assert custom.argv("stop", "web") == ["/usr/local/bin/svc", "down", "web"]
    assert custom.argv("start", "web") == BACKENDS["systemctl"]["start_command"].replace("{service}", "web").split()
    with pytest.raises(ActionFailed):
        agent(Service, {"backend": "upstart"}).argv("start", "web")


def test_service_state():
    assert service_state(completed("active\n")) == "running"
    assert service_state(completed("inactive\n", exitcode=3)) == "stopped"
    assert service_state(completed(exitcode=1)) == "stopped"
    assert service_state(completed(exitcode=4)) == "unknown"
    assert service_state(completed(stderr="nope: unrecognized service\n", exitcode=1)) == "unknown"


@pytest.mark.parametrize("name", ["-x", "a b", "x;y", "$(id)", "", "nginx\n"])
def test_service_names_refused(name):
    with pytest.raises(InputError):
        validate_inputs(Service.spec().actions["start"], {"service": name})


@pytest.mark.parametrize("settings", [{}, {"enabled": "false"}, {"enabled": "no"}, {"enabled": "maybe"}])
async def test_shell_is_disabled_unless_enabled(settings):
    from nmc.services.agent import ActionRequest

    shell = agent(Shell, settings)
    req = ActionRequest(data={"command": "true", "timeout": 5.0}, caller="c", request_id="r", sender="s")
    with pytest.raises(ActionFailed) as info:
        await shell.run(req)
    assert info.value.status == Status.ABORTED
    assert info.value.message.startswith("the shell agent is disabled on this node")


def test_shell_ddl():
    spec = Shell.spec().actions["run"]
    assert validate_inputs(spec, {"command": "uptime"}) == {"command": "uptime", "timeout": 30.0}
    with pytest.raises(InputError):
        validate_inputs(spec, {"command": "x" * 4097})
    with pytest.raises(InputError):
        validate_inputs(spec, {"command": "ls", "cwd": "relative/dir"})
    with pytest.raises(InputError):
        validate_inputs(spec, {})
    assert [(a.function, a.output) for a in spec.aggregates] == [("summary", "exitcode")]


def test_server_config_reaches_the_agents(tmp_path: Path):
    from nmc.ops.config.files import load_config
    from nmc.ops.config.settings import node_settings

    cfg = tmp_path / "server.cfg"
    cfg.write_text("identity = n1.test\nplugin.package.install_command = dpkg -i /srv/debs/{package}_{version}.deb\n")
    (tmp_path / "plugin.d").mkdir()
    (tmp_path / "plugin.d" / "shell.cfg").write_text("enabled = true\n")  # drop-in keys are relative
    settings = node_settings(load_config(cfg, kind="server", env={})).agent_settings
    pkg = agent(Package, settings["package"])
    assert pkg._argv("install_command", {"package": "p", "version": "1"}) == ["dpkg", "-i", "/srv/debs/p_1.deb"]
    assert pkg._argv("status_command", {"package": "p"}) == [
        "dpkg-query", "-W", r"-f=${Status}\t${Version}\t${Architecture}\n", "p"]
    assert settings["shell"] == {"enabled": "true", "max_output": "65536"}
    assert settings["service"]["backend"] == "auto"
    # Without a setting, shell keeps its default: disabled.
    assert node_settings(load_config(None, kind="server", env={})).agent_settings["shell"]["enabled"] == "false"
