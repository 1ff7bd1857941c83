"""Where agents come from: the built-ins, the `nmc.agents` entry points and the plugin directory.

The node daemon and the client load agents the same way (the client only to
know their DDLs), in this order:

1. ``builtin``: :data:`nmc.services.agents.BUILTIN_AGENTS`;
2. ``entry point``: every entry point in the ``nmc.agents`` group of the
   installed distributions, each naming an Agent subclass
   (``[project.entry-points."nmc.agents"] hello = "mypkg.hello:Hello"``);
3. ``plugin dir``: every ``*.py`` file (not starting with ``_`` or ``.``) in
   the ``plugindir`` directories, imported under a private module name; each
   Agent subclass defined in the file with a non-empty ``name`` is an agent.

An agent name may be taken once. A later source defining a name already
taken is refused with a :class:`PluginError` naming both places, unless its
class sets ``override = True``: then it replaces the earlier agent and a
warning is logged. So a built-in is never replaced by accident, and
replacing one on purpose is visible in the code and in the log.

A plugin that cannot be loaded (syntax error, failing import, an entry
point that is not an Agent) is a :class:`PluginError` with one line naming
the file or entry point: the daemon refuses to start with it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import structlog

from nmc.errors import NmcError
from nmc.services.agent import Agent
from nmc.services.agents import BUILTIN_AGENTS

__all__ = ["ENTRY_POINT_GROUP", "SOURCES", "LoadedAgent", "PluginError", "load_agents"]

ENTRY_POINT_GROUP = "nmc.agents"
SOURCES = ("builtin", "entry point", "plugin dir")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")

log = structlog.get_logger("nmc.loader")


class PluginError(NmcError):
    """An agent that cannot be loaded; `origin` is the file or entry point, `reason` the one-line message."""

    def __init__(self, reason: str, origin: str = "") -> None:
        super().__init__(reason)
        self.origin = origin


@dataclass(frozen=True)
class LoadedAgent:
    """One agent class and where it came from (for `nmc plugin list` and conflict messages)."""

    cls: type[Agent]
    source: str  # one of SOURCES
    origin: str  # module:Class, the entry point, or the plugin file

    @property
    def name(self) -> str:
        """The agent's name."""
        return self.cls.name


def _is_agent(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, Agent) and obj is not Agent


def _checked(cls: type[Agent], source: str, origin: str) -> LoadedAgent:
    if not _NAME.match(cls.name):
        raise PluginError(f"{origin}: agent name {cls.name!r} must be letters, digits, '_' or '-'", origin)
    return LoadedAgent(cls, source, origin)


def _add(found: dict[str, LoadedAgent], new: LoadedAgent) -> None:
    old = found.get(new.name)
    if old is None:
        found[new.name] = new
        return
    if old.cls is new.cls:
        return  # the same class reached twice (an entry point naming a built-in, say): nothing to decide
    if not getattr(new.cls, "override", False):
        raise PluginError(f"agent {new.name!r} from {new.origin} conflicts with the {old.source} agent from "
                          f"{old.origin}; set override = True in its class to replace it", new.origin)
    log.warning("agent_overridden", agent=new.name, replaced=old.origin, by=new.origin)
    found[new.name] = new


def _entry_point_agents(group: str) -> Iterable[LoadedAgent]:
    for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: (e.name, e.value)):
        origin = f"entry point {ep.name} = {ep.value}"
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(f"{origin}: cannot load: {_summary(exc)}", origin) from exc
        if not _is_agent(obj) or not obj.name:
            raise PluginError(f"{origin}: is not an Agent subclass with a name", origin)
        yield _checked(obj, "entry point", origin)


def _summary(exc: BaseException) -> str:
    """`Type: first line of the message`: what a broken plugin raised, without its traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _import_file(path: Path) -> ModuleType:
    """Import one plugin file under a private module name (unique per path, never clashing with real modules)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    modname = f"_nmc_plugin_{digest}_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {path}: cannot be imported", str(path))
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs: dataclasses and typing look their module up in sys.modules.
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(modname, None)
        raise PluginError(f"plugin {path}: {_summary(exc)}", str(path)) from exc
    return module


def _plugin_dir_agents(directory: Path) -> Iterable[LoadedAgent]:
    if not directory.is_dir():
        raise PluginError(f"plugin directory not found: {directory}", str(directory))
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith(("_", ".")) or not path.is_file():
            continue
        module = _import_file(path)
        classes = [obj for obj in vars(module).values()
                   if _is_agent(obj) and obj.__module__ == module.__name__ and obj.name]
        for cls in sorted(classes, key=lambda c: c.name):
            yield _checked(cls, "plugin dir", str(path))


def load_agents(plugindirs: Sequence[Path] = (), *, builtins: Sequence[type[Agent]] = BUILTIN_AGENTS,
                group: str = ENTRY_POINT_GROUP) -> tuple[LoadedAgent, ...]:
    """Every agent, in load order (built-ins, entry points, plugin directories); PluginError when one fails."""
    found: dict[str, LoadedAgent] = {}
    for cls in builtins:
        _add(found, LoadedAgent(cls, "builtin", f"{cls.__module__}:{cls.__qualname__}"))
    for loaded in _entry_point_agents(group):
        _add(found, loaded)
    for directory in plugindirs:
        for loaded in _plugin_dir_agents(directory):
            _add(found, loaded)
    return tuple(found.values())
