"""Shell completion of the real `nmc`: commands, agents and actions from the installed DDLs, input names.

Each test runs `nmc` in a subprocess the way a shell's completion script
does (click's `_NMC_COMPLETE` protocol), or runs bash itself with the script
`nmc completion bash` prints.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nmc.services.loader import load_agents
from tests.tools import require_tool

PLUGINS = Path(__file__).parent / "plugins"
BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    # No client config from this machine: completion must work from built-ins and entry points alone.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NMC_")}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra}


def _complete(shell: str, words: str, home: Path) -> list[str]:
    """The values `nmc` offers for the command line `words` (the cursor at its end)."""
    parts = words.split(" ")
    # bash and zsh pass the index of the word under the cursor, fish the partial word itself.
    cword = parts[-1] if shell == "fish" else str(len(parts) - 1)
    result = subprocess.run([sys.executable, "-m", "nmc"], capture_output=True, text=True, timeout=60,
                            env=_env(_NMC_COMPLETE=f"{shell}_complete", COMP_WORDS=words, COMP_CWORD=cword,
                                     HOME=str(home)))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    if shell == "bash":  # "type,value" per line
        return [line.partition(",")[2] for line in lines if line.startswith("plain,")]
    if shell == "fish":  # "type,value" or "type,value<TAB>help" per line: what click's fish script splits
        # (click 8.4.0 and 8.4.1 printed zsh's three lines here, which their own fish script could not read:
        # pyproject.toml excludes them, and test_fish_script_completes_in_fish runs the real fish)
        return [line.partition(",")[2].partition("\t")[0] for line in lines if line.startswith("plain,")]
    # zsh: type, value, help on three lines each
    return [lines[i + 1] for i in range(0, len(lines) - 2, 3) if lines[i] == "plain"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty home: no ~/.nmc/client.cfg and no dev fleet's client.cfg."""
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_agent_names_then_actions_then_inputs(home: Path):
    rpcutil = next(a.cls.spec() for a in load_agents() if a.name == "rpcutil")
    assert _complete("bash", "nmc rpc pu", home) == ["puppet"]
    assert _complete("bash", "nmc rpc rpcutil ", home) == sorted(rpcutil.actions)
    assert _complete("bash", "nmc rpc rpcutil get_f", home) == ["get_fact"]
    assert _complete("bash", "nmc rpc rpcutil get_fact ", home) == ["fact="]
    assert _complete("bash", "nmc rpc rpcutil get_fact fact=role ", home) == []  # already given
    assert _complete("bash", "nmc rpc -F role=web rpcutil pi", home) == ["ping"]
    assert _complete("bash", "nmc plugin ddl rpc", home) == ["rpcutil"]
    assert "completion" in _complete("bash", "nmc co", home)


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_get_the_same_names(shell: str, home: Path):
    rpcutil = next(a.cls.spec() for a in load_agents() if a.name == "rpcutil")
    assert _complete(shell, "nmc rpc pu", home) == ["puppet"]
    assert _complete(shell, "nmc rpc rpcutil ", home) == sorted(rpcutil.actions)
    assert _complete(shell, "nmc rpc rpcutil get_fact ", home) == ["fact="]


def test_agents_from_the_client_config_plugindir(home: Path, tmp_path: Path):
    cfg = tmp_path / "client.cfg"
    cfg.write_text(f"plugindir = {PLUGINS}\n")
    assert _complete("bash", f"nmc --config {cfg} rpc hel", home) == ["hello"]
    assert "greet" in _complete("bash", f"nmc --config {cfg} rpc hello ", home)
    assert _complete("bash", f"nmc --config {cfg} plugin ddl hel", home) == ["hello"]
    # The same config found the usual way, in ~/.nmc/client.cfg.
    (home / ".nmc").mkdir()
    shutil.copy(cfg, home / ".nmc" / "client.cfg")
    assert _complete("bash", "nmc rpc hel", home) == ["hello"]


def test_a_broken_config_or_plugin_means_no_suggestions_not_a_traceback(home: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.py").write_text("raise RuntimeError('plugin import fails')\n")
    cfg = tmp_path / "client.cfg"
    cfg.write_text(f"plugindir = {broken}\n")
    assert _complete("bash", f"nmc --config {cfg} rpc pu", home) == []
    assert _complete("bash", f"nmc --config {tmp_path / 'missing.cfg'} rpc pu", home) == []
    cfg.write_text("this is not a config line\n")
    assert _complete("bash", f"nmc --config {cfg} rpc rpcutil ", home) == []


def test_bash_script_is_valid_and_completes_in_bash(home: Path):
    script = subprocess.run([sys.executable, "-m", "nmc", "completion", "bash"], capture_output=True, text=True,
                            timeout=60, env=_env())
    assert script.returncode == 0 and "_NMC_COMPLETE=bash_complete" in script.stdout
    checked = subprocess.run(["bash", "-n"], input=script.stdout, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    # What <TAB> does: bash calls the function the script registers for nmc, which runs the nmc on PATH.
    assert shutil.which("nmc", path=str(BIN)), "the nmc console script is installed next to this Python"
    session = ('eval "$(nmc completion bash)"; complete -p nmc; '
               'COMP_WORDS=(nmc rpc rpcutil pi); COMP_CWORD=3; _nmc_completion nmc; printf "<%s>\\n" "${COMPREPLY[@]}"')
    ran = subprocess.run(["bash", "-c", session], capture_output=True, text=True, timeout=60,
                         env=_env(HOME=str(home)))
    assert ran.returncode == 0, ran.stderr
    assert "-F _nmc_completion nmc" in ran.stdout and "<ping>" in ran.stdout.splitlines()


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts(shell: str):
    script = subprocess.run([sys.executable, "-m", "nmc", "completion", shell], capture_output=True, text=True,
                            timeout=60, env=_env())
    assert script.returncode == 0 and f"_NMC_COMPLETE={shell}_complete" in script.stdout
    binary = require_tool(shell)  # syntax-checked by the shell itself: skipped with one line without it (not in CI)
    flag = ["-n"] if shell == "zsh" else ["--no-execute"]
    checked = subprocess.run([binary, *flag], input=script.stdout, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_fish_script_completes_in_fish(home: Path):
    # What <TAB> does in fish: the function the script registers runs the nmc on PATH and reads its answer.
    fish = require_tool("fish")
    session = ('nmc completion fish | source; complete -C "nmc rpc rpcutil pi"; echo ---; '
               'complete -C "nmc rpc rpcutil get_fact "')
    ran = subprocess.run([fish, "--no-config", "-c", session], capture_output=True, text=True, timeout=60,
                         env=_env(HOME=str(home)))
    assert ran.returncode == 0 and ran.stderr == "", ran.stderr
    pings, _, inputs = ran.stdout.partition("---\n")
    assert [line.partition("\t")[0] for line in pings.splitlines()] == ["ping"], ran.stdout
    assert [line.partition("\t")[0] for line in inputs.splitlines()] == ["fact="], ran.stdout


def test_unknown_shell_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "nmc", "completion", "tcsh"], capture_output=True, text=True,
                            timeout=60, env=_env())
    assert result.returncode == 4 and "tcsh" in result.stderr and "Traceback" not in result.stderr
