"""The filter language's syntax tree: frozen values, plus its one error type.

Node types::

    MatchAll                      the empty filter
    FactTerm(path, op, value)     os.release.major>=12, country=~/^d/
    ClassTerm(name, regex)        apache, /^role::/
    IdentityTerm(name, regex)     identity(web1), identity(/^web/)
    AgentTerm(name)               agent(puppet)
    Not(operand)                  not x, !x
    And(operands) / Or(operands)  two or more operands each

Every constructor validates itself, so any tree that exists can be printed
and parsed back to an equal tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from nmc.errors import ProtocolError
from nmc.protocol.regex import regex_problem  # RE2: linear time (re-exported)

__all__ = [
    "AgentTerm",
    "And",
    "ClassTerm",
    "FactTerm",
    "FilterSyntaxError",
    "IdentityTerm",
    "KEYWORDS",
    "MatchAll",
    "NAME_STOP_CHARS",
    "Node",
    "Not",
    "OPERATORS",
    "Or",
    "is_name",
    "normalise_regex",
    "regex_problem",
]

# Canonical operators; the parser reads `==` as `=` and `fact=/re/` as `=~`.
OPERATORS = ("=", "!=", "<", ">", "<=", ">=", "=~")
KEYWORDS = frozenset({"and", "or", "not"})
# Characters that end a bare name (fact path or class): they start operators,
# strings and groups. `/` is only special as a name's first character.
NAME_STOP_CHARS = frozenset('()"=<>!~')


class FilterSyntaxError(ProtocolError):
    """A filter expression that does not parse; `position` is a 0-based column."""

    def __init__(self, position: int, expected: str, expression: str) -> None:
        # Columns are shown 1-based, as editors and terminals count them.
        super().__init__(_printable(f"column {position + 1}: expected {expected} (in: {expression})"))
        self.position = position
        self.expected = expected
        self.expression = expression

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.position, self.expected, self.expression))


def _printable(text: str) -> str:
    """Escape line breaks and other control characters: the expression is shown as typed, columns still line up."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def is_name(text: str) -> bool:
    """True where text can stand bare as a fact path or class name."""
    return (
        text != ""
        and not text.startswith("/")
        and not any(c.isspace() or c in NAME_STOP_CHARS for c in text)
    )


def normalise_regex(pattern: str) -> str:
    r"""Drop the backslash of `\/`: Python's re reads it as `/`, and the printer re-escapes every `/`."""
    if "\\/" not in pattern:
        return pattern
    out: list[str] = []
    i = 0
    while i < len(pattern):
        pair = pattern[i : i + 2]
        if pair == "\\/":
            out.append("/")
            i += 2
        elif pair.startswith("\\") and len(pair) == 2:
            out.append(pair)  # `\\/` is an escaped backslash and then a real slash
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def _check_regex(pattern: str) -> None:
    problem = regex_problem(pattern)
    if problem is not None:
        raise ValueError(f"invalid regular expression /{pattern}/: {problem}")


@dataclass(frozen=True)
class MatchAll:
    """The empty filter: every node matches."""


@dataclass(frozen=True)
class FactTerm:
    """`path op value`; for op `=~` the value is a regex pattern, otherwise a literal."""

    path: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if not is_name(self.path):
            raise ValueError(f"invalid fact name {self.path!r}")
        if self.op not in OPERATORS:
            raise ValueError(f"unknown operator {self.op!r}, expected one of {' '.join(OPERATORS)}")
        if self.op == "=~":
            object.__setattr__(self, "value", normalise_regex(self.value))
            _check_regex(self.value)


@dataclass(frozen=True)
class ClassTerm:
    """A class the node has: exact name, or a regex searched in every class."""

    name: str
    regex: bool = False

    def __post_init__(self) -> None:
        _check_name_or_regex("class", self.name, self.regex)
        if self.regex:
            object.__setattr__(self, "name", normalise_regex(self.name))


@dataclass(frozen=True)
class IdentityTerm:
    """The node's identity: exact name, or a regex searched in it."""

    name: str
    regex: bool = False

    def __post_init__(self) -> None:
        _check_name_or_regex("identity", self.name, self.regex)
        if self.regex:
            object.__setattr__(self, "name", normalise_regex(self.name))


@dataclass(frozen=True)
class AgentTerm:
    """An agent the node has (exact name)."""

    name: str

    def __post_init__(self) -> None:
        if self.name == "":
            raise ValueError("an agent name must not be empty")


def _check_name_or_regex(kind: str, name: str, regex: bool) -> None:
    if regex:
        _check_regex(name)
    elif name == "":
        raise ValueError(f"a {kind} name must not be empty")


@dataclass(frozen=True)
class Not:
    """True where its operand is false."""

    operand: Node

    def __post_init__(self) -> None:
        _check_operand(self.operand)


@dataclass(frozen=True)
class And:
    """True where every operand is true."""

    operands: tuple[Node, ...]

    def __post_init__(self) -> None:
        _check_operands(self, "And")


@dataclass(frozen=True)
class Or:
    """True where at least one operand is true."""

    operands: tuple[Node, ...]

    def __post_init__(self) -> None:
        _check_operands(self, "Or")


def _check_operand(node: object) -> None:
    # MatchAll only stands alone: inside and/or/not it has no text to print.
    if not isinstance(node, _OPERAND_TYPES):
        raise ValueError(f"not a filter node: {node!r}")


def _check_operands(node: And | Or, kind: str) -> None:
    operands = tuple(node.operands)
    object.__setattr__(node, "operands", operands)  # a list would make the node unhashable
    if len(operands) < 2:
        raise ValueError(f"{kind} needs at least two operands, got {len(operands)}")
    for operand in operands:
        _check_operand(operand)


Node: TypeAlias = MatchAll | FactTerm | ClassTerm | IdentityTerm | AgentTerm | Not | And | Or

_OPERAND_TYPES = (FactTerm, ClassTerm, IdentityTerm, AgentTerm, Not, And, Or)
