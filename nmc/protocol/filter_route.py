"""Pick a narrower subject for a filter, and build one filter from CLI flags.

Routing invariant (PROTOCOL.md section 1): a subject may narrow who receives
a request only where it cannot leave out a node the filter matches. So only a
term that every matching node must satisfy (one in the top-level conjunction)
is used, and only where the node-side index provably holds it:

- `identity(NAME)`: the node subscribes to `node.<identity>`.
- `fact=VALUE` on a top-level fact: the node subscribes to
  `fact.<name>.<v>` for every v in `indexed_fact_values(fact)`. VALUE must
  not look numeric (then `=` compares as text, and the index holds the
  text), unless it is a canonical decimal integer (the index also holds the
  integer form of every integral number: `"007"`, `7.0` and `"7e0"` all sit
  under `7`).
- `NAME` (exact class): the node subscribes to `class.<class>`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nmc.protocol import filter_ast as ast_
from nmc.protocol.filter_ast import FilterSyntaxError, Node
from nmc.protocol.filter_match import as_number, fact_text
from nmc.protocol.filter_parse import parse, parse_fact_flag, to_string

__all__ = ["Route", "RouteKind", "canonical_fact_value", "combine", "indexed_fact_values", "route"]

RouteKind = Literal["all", "fact", "class", "node"]
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*", re.ASCII)


@dataclass(frozen=True)
class Route:
    """Where to publish: `all` (broadcast), or one fact value, class or node."""

    kind: RouteKind
    name: str = ""
    value: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("all", "fact", "class", "node"):
            raise ValueError(f"unknown route kind {self.kind!r}")
        if (self.kind == "all") != (self.name == ""):
            raise ValueError(f"a {self.kind!r} route {'takes no' if self.kind == 'all' else 'needs a'} name")
        if self.kind != "fact" and self.value != "":
            raise ValueError(f"a {self.kind!r} route takes no value")


def _top_level(path: str) -> bool:
    return "." not in path


def route(node: Node, covers: Callable[[str], bool] = _top_level) -> Route:
    """The narrowest subject that reaches every node the filter can match.

    `covers(path)` says whether every node subscribes that fact's values
    (the shared `fact_index` setting); by default only top-level facts.
    """
    terms = list(_conjuncts(node))
    for term in terms:
        if isinstance(term, ast_.IdentityTerm) and not term.regex:
            return Route("node", term.name)
    for term in terms:
        if isinstance(term, ast_.FactTerm) and _routable_fact(term, covers):
            return Route("fact", term.path, term.value)
    for term in terms:
        if isinstance(term, ast_.ClassTerm) and not term.regex:
            return Route("class", term.name)
    return Route("all")


def _conjuncts(node: Node) -> Iterable[Node]:
    """Terms every matching node satisfies: the node itself, or members of (nested) Ands."""
    if isinstance(node, ast_.And):
        for operand in node.operands:
            yield from _conjuncts(operand)
    elif isinstance(node, (ast_.FactTerm, ast_.ClassTerm, ast_.IdentityTerm, ast_.AgentTerm)):
        yield node
    # Or, Not and MatchAll promise nothing about any single term.


def _routable_fact(term: ast_.FactTerm, covers: Callable[[str], bool]) -> bool:
    if term.op != "=" or not covers(term.path):
        return False
    try:
        float(term.value)
    except ValueError:
        return True  # not numeric anywhere: `=` compares text only
    return _CANONICAL_INT.fullmatch(term.value) is not None


def canonical_fact_value(value: Any) -> str | None:
    """A scalar fact's index string: str as is, bool `true`/`false`, int decimal; else None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    return None


def indexed_fact_values(value: Any) -> tuple[str, ...]:
    """Every `<value>` token under which a node must subscribe one top-level fact, sorted.

    Wider than canonical_fact_value() because `=` also matches list elements
    and numbers equal to an integer: a node with fact `["a", "b"]` must hear
    `fact.x.a` and `fact.x.b`, one with `"007"` or `7.0` must hear `fact.x.7`.
    """
    found: set[str] = set()
    _collect_index(value, found)
    return tuple(sorted(found))


def _collect_index(value: Any, found: set[str]) -> None:
    if value is None or isinstance(value, Mapping):
        return  # matches no `=` term on this path
    if isinstance(value, (list, tuple)):
        for element in value:
            _collect_index(element, found)
        return
    found.add(fact_text(value))
    number = as_number(value)
    if number is not None and math.isfinite(number) and number == int(number):
        found.add(str(int(number)))


def combine(
    *,
    facts: Iterable[str] = (),
    classes: Iterable[str] = (),
    identities: Iterable[str] = (),
    agents: Iterable[str] = (),
    compound: Iterable[str] = (),
) -> str:
    """One canonical filter from MCollective-style flags (-F, -C, -I, -A, -S), all joined by `and`."""
    parts: list[Node] = [parse_fact_flag(text) for text in facts]
    parts.extend(_class_flag(text) for text in classes)
    names = [_identity_flag(text) for text in identities]
    if names:
        # -I is repeatable and means "any of these nodes".
        parts.append(names[0] if len(names) == 1 else ast_.Or(tuple(names)))
    parts.extend(_agent_flag(text) for text in agents)
    for text in compound:
        node = parse(text)
        if isinstance(node, ast_.And):
            parts.extend(node.operands)  # `a and b` needs no parentheses inside the whole
        elif not isinstance(node, ast_.MatchAll):
            parts.append(node)
    if not parts:
        return ""
    return to_string(parts[0] if len(parts) == 1 else ast_.And(tuple(parts)))


def _class_flag(text: str) -> ast_.ClassTerm:
    node = parse(text)
    if not isinstance(node, ast_.ClassTerm):
        raise FilterSyntaxError(0, "a class name or /regex/ (one -C flag per class)", text)
    return node


def _identity_flag(text: str) -> ast_.IdentityTerm:
    name = text.strip()
    if name.startswith("/"):
        node = parse(text)  # reuse the regex reader and its error columns
        if not isinstance(node, ast_.ClassTerm) or not node.regex:
            raise FilterSyntaxError(0, "an identity or /regex/ (one -I flag per identity)", text)
        return ast_.IdentityTerm(node.name, regex=True)
    if name == "":
        raise FilterSyntaxError(0, "an identity or /regex/", text)
    return ast_.IdentityTerm(name)


def _agent_flag(text: str) -> ast_.AgentTerm:
    name = text.strip()
    if name == "" or any(c.isspace() for c in name):
        raise FilterSyntaxError(0, "an agent name (one -A flag per agent)", text)
    return ast_.AgentTerm(name)
