"""Evaluate a filter tree against what one node says about itself.

Fact comparison, in order: a regex operator searches the value's text; two
numbers compare as numbers (`7` equals `"007"` and `7.0`); for ordering, two
version-like strings compare group by group (`1.2.10 > 1.2.9`); anything
else compares as text, where booleans are `true`/`false`. A fact the node
does not have (or that is null) matches no term, not even `!=`; a list
matches where any element does; a mapping only through a deeper path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from nmc.protocol.filter_ast import (
    AgentTerm,
    And,
    ClassTerm,
    FactTerm,
    IdentityTerm,
    MatchAll,
    Node,
    Not,
    Or,
)
from nmc.protocol.regex import search

__all__ = ["MISSING", "as_number", "fact_text", "lookup_fact", "matches"]

# Stricter than float(): no "nan", "inf", "1_000", padding or non-ASCII digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*(?:[-+~_.]?[0-9A-Za-z][0-9A-Za-z.+~_-]*)?", re.ASCII)
_VERSION_PART = re.compile(r"[0-9]+|[^0-9]+", re.ASCII)
_MISSING = object()
MISSING = _MISSING  # public name: what lookup_fact returns for a fact that is not there


def matches(
    node: Node,
    facts: Mapping[str, Any],
    classes: Collection[str],
    identity: str,
    agents: Collection[str],
) -> bool:
    """True where a node with these facts, classes, identity and agents is selected by the filter."""
    if isinstance(node, MatchAll):
        return True
    if isinstance(node, FactTerm):
        return _fact_matches(lookup_fact(facts, node.path), node)
    if isinstance(node, ClassTerm):
        if node.regex:
            return any(search(node.name, name) for name in classes)
        return node.name in classes
    if isinstance(node, IdentityTerm):
        if node.regex:
            return search(node.name, identity)
        return node.name == identity
    if isinstance(node, AgentTerm):
        return node.name in agents
    if isinstance(node, Not):
        return not matches(node.operand, facts, classes, identity, agents)
    if isinstance(node, And):
        return all(matches(op, facts, classes, identity, agents) for op in node.operands)
    if isinstance(node, Or):
        return any(matches(op, facts, classes, identity, agents) for op in node.operands)
    raise TypeError(f"not a filter node: {node!r}")


def lookup_fact(facts: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or a private sentinel where there is none.

    A key that literally contains dots wins over walking into mappings, at
    every level: the longest matching key prefix is tried first.
    """
    if path in facts:
        return facts[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        inner = facts.get(head, _MISSING)
        if isinstance(inner, Mapping):
            found = lookup_fact(inner, ".".join(parts[cut:]))
            if found is not _MISSING:
                return found
    return _MISSING


def fact_text(value: Any) -> str:
    """The text a fact value compares as: booleans are `true`/`false`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return str(value)


def as_number(value: Any) -> int | float | None:
    """The number a fact value or filter value stands for, or None (booleans are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else value
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        if _INTEGER.fullmatch(value):
            try:
                return int(value)  # exact, so 10000000000000001 != 10000000000000000
            except ValueError:
                pass  # beyond Python's digit limit for int(): compare as float
        return float(value)
    return None


def _fact_matches(value: Any, term: FactTerm) -> bool:
    if value is _MISSING or value is None or isinstance(value, Mapping):
        return False
    if isinstance(value, (list, tuple)):
        return any(_fact_matches(element, term) for element in value)
    return _compare(value, term.op, term.value)


def _compare(fact: Any, op: str, wanted: str) -> bool:
    text = fact_text(fact)
    if op == "=~":
        return search(wanted, text)
    if op in ("=", "!="):
        equal = _equal(fact, text, wanted)
        return equal if op == "=" else not equal
    order = _order(fact, text, wanted)
    if op == "<":
        return order < 0
    if op == ">":
        return order > 0
    if op == "<=":
        return order <= 0
    return order >= 0  # ">=", the only operator left after FactTerm's own check


def _equal(fact: Any, text: str, wanted: str) -> bool:
    left, right = as_number(fact), as_number(wanted)
    if left is not None and right is not None:
        return left == right
    return text == wanted


def _order(fact: Any, text: str, wanted: str) -> int:
    """-1, 0 or 1 as the fact sorts before, with or after the wanted value."""
    left: Any
    right: Any
    left, right = as_number(fact), as_number(wanted)
    if left is None or right is None:
        if _VERSION.fullmatch(text) and _VERSION.fullmatch(wanted):
            left, right = _version_key(text), _version_key(wanted)
        else:
            left, right = text, wanted
    return int(left > right) - int(left < right)


def _version_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Digit runs compare by value, other runs as text: 1.2.10 > 1.2.9, 5.14.0-362 > 5.14.0-300."""
    key = []
    for part in _VERSION_PART.findall(text):
        if part.isdigit():
            digits = part.lstrip("0") or "0"
            # Length then digits orders by value without int(), which caps at 4300 digits.
            key.append((0, len(digits), digits))
        else:
            key.append((1, 0, part))
    return tuple(key)
