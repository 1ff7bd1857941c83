"""Which facts a node subscribes fact subjects for, and so which the client may route on.

Routing by fact subject is only safe for facts every node indexes (PROTOCOL.md
routing invariant), so the same `fact_index` setting is read by nodes (what to
subscribe) and by clients (what to route on). Spec syntax, comma separated:
`*` every top-level fact, `name` or `dotted.path` one fact, `-name` never.
Default: every top-level fact plus the well-known nested `os.*` facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nmc.protocol.filter_match import MISSING, lookup_fact
from nmc.protocol.filter_route import indexed_fact_values

__all__ = ["DEFAULT_FACT_INDEX", "FactIndex"]

DEFAULT_FACT_INDEX = "*,os.family,os.name,os.release.major,os.release.full"


@dataclass(frozen=True)
class FactIndex:
    """A parsed `fact_index` setting."""

    all_top_level: bool = True
    include: frozenset[str] = frozenset({"os.family", "os.name", "os.release.major", "os.release.full"})
    exclude: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, spec: str) -> FactIndex:
        """Parse `*,os.family,-uptime`; raises ValueError with the bad item."""
        every, include, exclude = False, set(), set()
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            if item == "*":
                every = True
            elif item.startswith("-") and len(item) > 1:
                exclude.add(item[1:])
            elif item.startswith("-") or any(c.isspace() for c in item) or ".." in item or item.startswith("."):
                raise ValueError(f"fact_index: bad item {item!r} (use *, a fact name or dotted path, or -name)")
            else:
                include.add(item)
        return cls(all_top_level=every, include=frozenset(include), exclude=frozenset(exclude))

    def covers(self, path: str) -> bool:
        """True when every node with this index subscribes `path`'s values."""
        if path in self.exclude:
            return False
        if path in self.include:
            return True
        return self.all_top_level and "." not in path

    def entries(self, facts: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(path, value token) pairs a node with these facts subscribes, sorted."""
        paths = {p for p in self.include if p not in self.exclude}
        if self.all_top_level:
            paths |= {name for name in facts if "." not in name and name not in self.exclude}
        out: set[tuple[str, str]] = set()
        for path in paths:
            value = lookup_fact(facts, path)
            if value is MISSING or value is None:
                continue
            out.update((path, token) for token in indexed_fact_values(value))
        return sorted(out)
