"""FactSources: merge order, failures as one-line FactErrors, the settings that build it.

"facter" here is a real subprocess: small Python programs standing in for
facter's exit codes and output (the real facter is in tests/integration/test_facter.py).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from nmc.ops.config.files import load_config
from nmc.ops.config.settings import SettingsError, fact_refresh_interval, fact_sources
from nmc.services.facts import FactError, FactSources, builtin_facts


def fake_facter(script: str) -> tuple[str, ...]:
    """A command that runs `script` in a fresh Python: a real process with real pipes and exit code."""
    return (sys.executable, "-c", f"import json, sys, time\n{script}")


def printing(facts: dict, status: int = 0, stderr: str = "") -> tuple[str, ...]:
    return fake_facter(f"print(json.dumps({facts!r}))\nsys.stderr.write({stderr!r})\nsys.exit({status})")


@pytest.fixture
def yaml_file(tmp_path: Path):
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path
    return write


# --- merge order ------------------------------------------------------------------------------------------

async def test_merge_order_builtin_then_facter_then_yaml(yaml_file):
    first = yaml_file("a.yaml", "role: web\nkernel: FromYaml\ncountry: de\n")
    second = yaml_file("b.yaml", "country: uk\n")
    sources = FactSources(builtin=True, yaml_files=(first, second),
                          facter_command=printing({"kernel": "FromFacter", "hostname": "facterhost", "x": 1}))
    facts = (await sources.collect(version=7)).facts
    assert facts["kernel"] == "FromYaml"  # YAML beats facter
    assert facts["hostname"] == "facterhost"  # facter beats builtin
    assert facts["python_version"] == builtin_facts()["python_version"]  # builtin-only facts stay
    assert facts["country"] == "uk" and facts["role"] == "web" and facts["x"] == 1  # later YAML file wins


async def test_merge_is_top_level_only(yaml_file):
    # A YAML `os:` replaces the whole collected `os`, it is not deep-merged: what the operator wrote is what counts.
    path = yaml_file("f.yaml", "os:\n  family: Custom\n")
    facts = (await FactSources(builtin=True, yaml_files=(path,)).collect()).facts
    assert facts["os"] == {"family": "Custom"}


async def test_sources_can_be_switched_off(yaml_file):
    path = yaml_file("f.yaml", "role: db\n")
    result = await FactSources(builtin=False, yaml_files=(path,)).collect(version=3)
    assert dict(result.facts) == {"role": "db"} and result.classes == () and result.version == 3
    assert dict((await FactSources(builtin=False).collect()).facts) == {}


async def test_classes_file(tmp_path: Path):
    classes = tmp_path / "classes.txt"
    classes.write_text("# puppet\nrole::web\n\nnginx\nrole::web\n  base  \n")
    result = await FactSources(builtin=False, classes_file=classes).collect()
    assert result.classes == ("role::web", "nginx", "base")


async def test_missing_classes_file_is_a_fact_error(tmp_path: Path):
    with pytest.raises(FactError) as info:
        await FactSources(builtin=False, classes_file=tmp_path / "nope.txt").collect()
    assert info.value.path == tmp_path / "nope.txt" and "cannot read classes file" in info.value.reason


# --- YAML failures ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, reason", [
    ("role: web\n  bad: [indent\n", "not valid YAML"),
    ("- a\n- b\n", "must hold a mapping, got list"),
])
async def test_bad_yaml_is_one_line(yaml_file, text: str, reason: str):
    path = yaml_file("bad.yaml", text)
    with pytest.raises(FactError) as info:
        await FactSources(builtin=False, yaml_files=(path,)).collect()
    assert info.value.path == path and info.value.source == str(path)
    assert reason in info.value.reason and "\n" not in str(info.value)


async def test_yaml_and_classes_that_are_not_utf8(tmp_path: Path):
    blob = tmp_path / "blob"
    blob.write_bytes(b"role: \xff\xfe\n")
    with pytest.raises(FactError, match="facts file is not UTF-8 text"):
        await FactSources(builtin=False, yaml_files=(blob,)).collect()
    with pytest.raises(FactError, match="classes file is not UTF-8 text"):
        await FactSources(builtin=False, classes_file=blob).collect()


async def test_missing_yaml_file(tmp_path: Path):
    with pytest.raises(FactError) as info:
        await FactSources(builtin=False, yaml_files=(tmp_path / "gone.yaml",)).collect()
    assert "cannot read facts file" in info.value.reason and "\n" not in str(info.value)


# --- facter failures --------------------------------------------------------------------------------------

async def test_missing_facter_binary():
    with pytest.raises(FactError) as info:
        await FactSources(builtin=False, facter_command=("nmc-no-such-facter", "--json")).collect()
    assert info.value.reason == "command not found: nmc-no-such-facter"
    assert info.value.source == "nmc-no-such-facter --json" and info.value.path is None


async def test_facter_nonzero_exit_without_facts():
    command = fake_facter("sys.stderr.write('\\x1b[31mERROR Facter - boom\\x1b[0m\\nsecond: it broke\\n'); sys.exit(3)")
    with pytest.raises(FactError) as info:
        await FactSources(builtin=False, facter_command=command).collect()
    assert info.value.reason == "exited with status 3: second: it broke"


async def test_facter_bad_json():
    with pytest.raises(FactError) as info:
        await FactSources(builtin=False, facter_command=fake_facter("print('kernel => Linux')")).collect()
    assert info.value.reason.startswith("output is not JSON") and "\n" not in str(info.value)


async def test_facter_json_that_is_not_an_object():
    with pytest.raises(FactError) as info:
        await FactSources(builtin=False, facter_command=fake_facter("print('[1, 2]')")).collect()
    assert info.value.reason == "output must be a JSON object, got list"


async def test_facter_printing_nothing():
    with pytest.raises(FactError) as info:
        await FactSources(builtin=False, facter_command=fake_facter("pass")).collect()
    assert info.value.reason == "printed nothing: no output"


async def test_facter_timeout_kills_it(tmp_path: Path):
    marker = tmp_path / "still-running"
    # The child would write the marker after 3 s if it survived the kill.
    command = fake_facter(f"time.sleep(3)\nopen({str(marker)!r}, 'w').close()")
    start = time.monotonic()
    with pytest.raises(FactError) as info:
        await FactSources(builtin=False, facter_command=command, facter_timeout=0.3).collect()
    assert time.monotonic() - start < 2.5
    assert info.value.reason == "no answer after 0.3 s (killed)"
    assert not marker.exists()


async def test_facter_nonzero_exit_with_facts_is_accepted_with_a_warning():
    # Facter 4 exits 1 whenever it logged an error (e.g. /proc/1/environ unreadable in a container),
    # yet prints every fact it did resolve: those facts are used, the complaint is logged.
    command = printing({"kernel": "Linux"}, status=1, stderr="ERROR Facter - Permission denied\n")
    with capture_logs() as logs:
        facts = (await FactSources(builtin=False, facter_command=command).collect()).facts
    assert dict(facts) == {"kernel": "Linux"}
    [warning] = [e for e in logs if e["event"] == "facter_reported_errors"]
    assert warning["log_level"] == "warning" and warning["status"] == 1
    assert warning["stderr"] == "ERROR Facter - Permission denied"


def test_fact_sources_validate_themselves():
    with pytest.raises(ValueError, match="facter_command"):
        FactSources(facter_command=())
    with pytest.raises(ValueError, match="facter_timeout"):
        FactSources(facter_timeout=0)
    assert FactSources(yaml_files=["a.yaml"]).yaml_files == (Path("a.yaml"),)  # type: ignore[arg-type]


# --- settings ---------------------------------------------------------------------------------------------

def server_config(tmp_path: Path, text: str):
    path = tmp_path / "server.cfg"
    path.write_text(text, encoding="utf-8")
    return load_config(path, kind="server", env={})


def test_default_fact_sources_are_builtin_and_yaml(tmp_path: Path):
    config = server_config(tmp_path, "plugin.yaml = a.yaml:/etc/b.yaml\nclassesfile = classes.txt\n")
    sources = fact_sources(config)
    assert sources == FactSources(builtin=True, yaml_files=(tmp_path / "a.yaml", Path("/etc/b.yaml")),
                                  facter_command=None, classes_file=tmp_path / "classes.txt")
    assert fact_refresh_interval(config) == 300


def test_facter_source_and_command(tmp_path: Path):
    config = server_config(tmp_path, "factsource = Facter, yaml\nplugin.yaml = f.yaml\n"
                                     "plugin.facter.command = /opt/puppetlabs/bin/facter --json 'a b'\n"
                                     "fact_refresh_interval = 0\n")
    sources = fact_sources(config)
    assert not sources.builtin and sources.yaml_files == (tmp_path / "f.yaml",)
    assert sources.facter_command == ("/opt/puppetlabs/bin/facter", "--json", "a b")
    assert fact_refresh_interval(config) == 0
    default = fact_sources(server_config(tmp_path, "factsource = facter\n"))
    assert default.facter_command == ("facter", "--json") and default.yaml_files == ()


def test_unknown_fact_source_names_key_and_origin(tmp_path: Path):
    config = server_config(tmp_path, "identity = x\nfactsource = builtin,puppetdb\n")
    with pytest.raises(SettingsError) as info:
        fact_sources(config)
    assert "factsource" in info.value.reason and "'puppetdb'" in info.value.reason
    assert f"{tmp_path / 'server.cfg'}:2" in info.value.reason


def test_bad_refresh_interval_and_facter_command(tmp_path: Path):
    with pytest.raises(SettingsError, match="fact_refresh_interval .* got -1"):
        fact_refresh_interval(server_config(tmp_path, "fact_refresh_interval = -1\n"))
    with pytest.raises(SettingsError, match="plugin.facter.command: No closing quotation"):
        fact_sources(server_config(tmp_path, "factsource = facter\nplugin.facter.command = facter 'oops\n"))


def test_json_roundtrip_of_merged_facts_is_plain():
    # Facts go on the wire: every collected value must be JSON-serialisable.
    json.dumps(builtin_facts())
