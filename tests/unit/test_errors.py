"""The one exception tree (nmc.errors): every nmc error is an NmcError, and the CLI shows it as one line."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import nmc
from nmc.errors import NmcError, one_line, reason_of

NMC = [sys.executable, "-m", "nmc"]


def _nmc_exception_classes() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for info in pkgutil.walk_packages(nmc.__path__, "nmc."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found.add(obj)
    return found


def test_every_public_nmc_error_derives_from_nmc_error() -> None:
    classes = _nmc_exception_classes()
    assert NmcError in classes
    # A root of nmc's own hierarchy: none of its bases is an nmc class.
    roots = {cls for cls in classes
             if not any(base.__module__.startswith("nmc.") for base in cls.__mro__[1:])}
    strays = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in roots
                    if cls.__name__.endswith("Error") and not cls.__name__.startswith("_") and cls is not NmcError)
    assert strays == []
    public = [cls for cls in classes if cls.__name__.endswith("Error") and not cls.__name__.startswith("_")]
    assert all(issubclass(cls, NmcError) for cls in public), [c for c in public if not issubclass(c, NmcError)]


def test_reason_is_one_line_and_is_the_message() -> None:
    exc = NmcError("first\n  second\r\nthird\n")
    assert exc.reason == "first second third"
    assert str(exc) == exc.reason


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("plain", None, "plain"),
    ("a\nb", None, "a b"),
    ("  a  \n\n  b  ", None, "a b"),
    ("", None, ""),
    ("x" * 10, 10, "x" * 10),
    ("x" * 11, 10, "xxxxxxx..."),
    ("a\nb" + "c" * 20, 8, "a bcc..."),
])
def test_one_line(text: str, limit: int | None, expected: str) -> None:
    assert one_line(text, limit) == expected


def test_reason_of_prefers_the_reason_then_the_message_then_the_type() -> None:
    class WithReason(Exception):
        reason = "the reason\nwrapped"

    assert reason_of(WithReason("the message")) == "the reason wrapped"
    assert reason_of(ValueError("bad\nvalue")) == "bad value"
    assert reason_of(TimeoutError()) == "TimeoutError"


def test_subclasses_keep_their_fields_and_other_bases() -> None:
    from nmc.ops.config.parse import ConfigError
    from nmc.protocol.registry import RecordError
    from nmc.services.replaylog import ReplayLogError

    config = ConfigError("bad value", "/etc/nmc/client.cfg", 3)
    assert (str(config), config.reason, config.path, config.line) == \
        ("/etc/nmc/client.cfg:3: bad value", "bad value", "/etc/nmc/client.cfg", 3)
    assert isinstance(RecordError("x"), ValueError)
    assert isinstance(ReplayLogError("x"), OSError)


def test_errors_import_nothing_heavy() -> None:
    code = ("import sys, nmc.errors; "
            "print([m for m in sys.modules if m.startswith(('nats', 'cryptography', 'click', 'structlog'))])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("args", "hint"), [
    (["--config", "{missing}", "ping"], "given by --config or NMC_CONFIG"),
    (["--config", "{bad}", "ping"], "bad.cfg:1:"),
    (["find", "-F", "(a="], "column"),
])
def test_a_user_mistake_is_one_error_line_without_traceback(tmp_path: Path, args: list[str], hint: str) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("this line has no equals sign\n", encoding="utf-8")
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    argv = [a.format(missing=tmp_path / "missing.cfg", bad=bad) for a in args]
    done = subprocess.run([*NMC, *argv], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, check=False)
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert hint in lines[0]
