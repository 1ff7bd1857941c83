"""Where a node's facts and classes come from: a built-in collector, YAML files, a classes file.

Nodes are the source of truth about themselves: these are the values that
filters are evaluated against and that fact subjects are derived from.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["FactError", "NodeFacts", "builtin_facts", "load_classes", "load_yaml_facts", "merge_facts"]


class FactError(Exception):
    """A facts or classes file that cannot be read; `reason` is one line."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


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
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise FactError(path, f"cannot read facts file: {exc.strerror}") from exc
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
    seen: dict[str, None] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            seen.setdefault(line, None)
    return tuple(seen)
