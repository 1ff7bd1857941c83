"""Where a node's facts and classes come from: a built-in collector, facter, YAML files, a classes file.

Nodes are the source of truth about themselves: these are the values that
filters are evaluated against and that fact subjects are derived from.
`FactSources` says which sources a node uses and collects them without
blocking the event loop (files in a thread, facter as a subprocess).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import shlex
import signal
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from nmc.errors import NodeError, one_line
from nmc.services.procgroup import signal_group

__all__ = ["FactError", "FactSources", "NodeFacts", "builtin_facts", "load_classes", "load_yaml_facts",
           "merge_facts", "run_facter"]

log = structlog.get_logger("nmc.facts")


class FactError(NodeError):
    """A fact source that cannot be read: a file, or the facter command.

    `source` is the file's path or the command line; `reason` is one line;
    `path` is the file (None for facter).
    """

    def __init__(self, source: Path | str, reason: str) -> None:
        super().__init__(reason, where=source)
        self.source = str(source)
        self.path = source if isinstance(source, Path) else None


@dataclass(frozen=True)
class NodeFacts:
    """A snapshot of what a node says about itself; replaced whole when it changes."""

    facts: Mapping[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    version: int = 0  # bumps on every change, so caches keyed by it invalidate


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


_FAMILIES = {"debian": "Debian", "ubuntu": "Debian", "rhel": "RedHat", "fedora": "RedHat",
             "centos": "RedHat", "suse": "Suse", "alpine": "Alpine", "arch": "Archlinux"}


def builtin_facts() -> dict[str, Any]:
    """Facts every node has without facter: names follow facter 4 so filters port over."""
    rel = _os_release()
    ids = [rel.get("ID", "")] + rel.get("ID_LIKE", "").split()
    family = next((_FAMILIES[i] for i in ids if i in _FAMILIES), platform.system())
    version = rel.get("VERSION_ID", platform.release())
    fqdn = socket.getfqdn()
    facts: dict[str, Any] = {
        "hostname": socket.gethostname().split(".")[0],
        "fqdn": fqdn,
        "kernel": platform.system(),
        "kernelrelease": platform.release(),
        "osfamily": family,
        "operatingsystem": rel.get("NAME", platform.system()).split()[0],
        "operatingsystemrelease": version,
        "os": {"family": family, "name": rel.get("NAME", platform.system()).split()[0],
               "release": {"full": version, "major": version.split(".")[0]}},
        "processorcount": os.cpu_count() or 1,
        "architecture": platform.machine(),
        "python_version": platform.python_version(),
    }
    mem = _memory_bytes()
    if mem is not None:
        facts["memorysize_mb"] = mem // (1024 * 1024)
    facts["python"] = {"version": platform.python_version(), "implementation": sys.implementation.name}
    return facts


def merge_facts(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win at top level (a YAML file can override a collected fact)."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(layer)
    return out


def load_yaml_facts(paths: Iterable[Path]) -> dict[str, Any]:
    """Read and merge YAML facts files (MCollective's `plugin.yaml`), later files winning."""
    merged: dict[str, Any] = {}
    for path in paths:
        import yaml  # PyYAML (~0.9 MiB resident) only when a YAML facts file is configured

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise FactError(path, f"cannot read facts file: {exc.strerror}") from exc
        except UnicodeDecodeError:
            raise FactError(path, "facts file is not UTF-8 text") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            raise FactError(path, f"{where}not valid YAML") from exc
        if data is None:
            continue
        if not isinstance(data, dict):
            raise FactError(path, f"facts file must hold a mapping, got {type(data).__name__}")
        merged.update({str(k): v for k, v in data.items()})
    return merged


def load_classes(path: Path | None) -> tuple[str, ...]:
    """Read a classes file: one class per line, as puppet writes classes.txt."""
    if path is None:
        return ()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FactError(path, f"cannot read classes file: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise FactError(path, "classes file is not UTF-8 text") from None
    seen: dict[str, None] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            seen.setdefault(line, None)
    return tuple(seen)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SHOWN = 200  # characters of facter's complaint or command line in a reason


def _last_line(stderr: bytes) -> str:
    """The last non-empty stderr line without colour codes: facter's complaint, fit for one log line."""
    lines = [_ANSI.sub("", line).strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    return one_line(next((line for line in reversed(lines) if line), ""), limit=_SHOWN)


async def run_facter(command: tuple[str, ...], timeout: float = 60.0) -> dict[str, Any]:
    """Run `facter --json` (or `command`) as a subprocess and return its facts; FactError on failure.

    A non-zero exit with a JSON object on stdout is accepted with a warning:
    facter 4 exits 1 whenever it logged any error, e.g. in a container where
    reading /proc/1/environ is denied, yet it still prints every fact it resolved.
    """
    source = one_line(shlex.join(command).replace("\n", "\\n"), limit=_SHOWN)
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        raise FactError(source, f"command not found: {command[0]}") from None
    except PermissionError:
        raise FactError(source, f"command not executable: {command[0]}") from None
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException as exc:  # timeout or cancellation: never leave facter running
        signal_group(proc.pid, signal.SIGKILL)  # the whole group: facter's helpers (dmidecode, virt-what) hold its pipes too
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise FactError(source, f"no answer after {timeout:g} s (killed)") from None
        raise
    status = proc.returncode
    try:
        data = json.loads(stdout) if stdout.strip() else None
    except ValueError as exc:
        if status:
            raise FactError(source, f"exited with status {status}: {_last_line(stderr)}") from None
        raise FactError(source, f"output is not JSON ({getattr(exc, 'msg', exc)})") from None
    if data is None:
        why = f"exited with status {status}" if status else "printed nothing"
        raise FactError(source, f"{why}: {_last_line(stderr) or 'no output'}")
    if not isinstance(data, dict):
        raise FactError(source, f"output must be a JSON object, got {type(data).__name__}")
    if status:
        log.warning("facter_reported_errors", command=source, status=status, stderr=_last_line(stderr))
    return {str(k): v for k, v in data.items()}


@dataclass(frozen=True)
class FactSources:
    """Which sources make up a node's facts, and how to read them.

    Merge order, later winning at top level: built-in < facter < YAML. The
    collectors know what the machine is; a YAML file is what the operator
    wrote down on purpose (role, country, an override of a wrong fact), so
    it has the last word, as `plugin.yaml` had in MCollective.
    """

    builtin: bool = True
    yaml_files: tuple[Path, ...] = ()
    facter_command: tuple[str, ...] | None = None  # e.g. ("facter", "--json"); None: facter not used
    classes_file: Path | None = None
    facter_timeout: float = 60.0

    def __post_init__(self) -> None:
        # Accept any iterable of str/Path, stored as a tuple of Paths so the value stays hashable and frozen.
        object.__setattr__(self, "yaml_files", tuple(Path(p) for p in self.yaml_files))
        if self.facter_command is not None:
            if not self.facter_command or not self.facter_command[0]:
                raise ValueError("facter_command must name a program, e.g. ('facter', '--json')")
            object.__setattr__(self, "facter_command", tuple(self.facter_command))
        if not (math.isfinite(self.facter_timeout) and self.facter_timeout > 0):
            raise ValueError(f"facter_timeout must be a positive number of seconds, got {self.facter_timeout!r}")

    def _read_local(self) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
        """Built-in facts, YAML facts and classes: blocking work, run in a thread."""
        builtin = builtin_facts() if self.builtin else {}  # getfqdn() may wait on DNS
        return builtin, load_yaml_facts(self.yaml_files), load_classes(self.classes_file)

    async def collect(self, version: int = 0) -> NodeFacts:
        """Read every source once and merge them; FactError names the source that failed."""
        # Files first: they are cheap and fail fast, before facter's half second is spent.
        builtin, from_yaml, classes = await asyncio.to_thread(self._read_local)
        from_facter: dict[str, Any] = {}
        if self.facter_command is not None:
            from_facter = await run_facter(self.facter_command, self.facter_timeout)
        return NodeFacts(facts=merge_facts(builtin, from_facter, from_yaml), classes=classes, version=version)
