"""The nmc filter language: parse, print, match, route and build from CLI flags.

`parse(text)` gives a tree, `to_string(tree)` its canonical text,
`matches(tree, facts, classes, identity, agents)` evaluates it on a node,
`route(tree)` picks the subject a client may publish on, and `combine(...)`
turns `-F/-C/-I/-A/-S` flags into one expression.
"""

from __future__ import annotations

from nmc.protocol.filter_ast import (
    AgentTerm,
    And,
    ClassTerm,
    FactTerm,
    FilterSyntaxError,
    IdentityTerm,
    MatchAll,
    Node,
    Not,
    Or,
)
from nmc.protocol.filter_match import matches
from nmc.protocol.filter_parse import parse, parse_fact_flag, to_string
from nmc.protocol.filter_route import (
    Route,
    RouteKind,
    canonical_fact_value,
    combine,
    indexed_fact_values,
    route,
)

__all__ = [
    "AgentTerm",
    "And",
    "ClassTerm",
    "FactTerm",
    "FilterSyntaxError",
    "IdentityTerm",
    "MatchAll",
    "Node",
    "Not",
    "Or",
    "Route",
    "RouteKind",
    "canonical_fact_value",
    "combine",
    "indexed_fact_values",
    "matches",
    "parse",
    "parse_fact_flag",
    "route",
    "to_string",
]
